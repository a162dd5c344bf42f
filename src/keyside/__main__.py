from keyside.cli import main

raise SystemExit(main())
