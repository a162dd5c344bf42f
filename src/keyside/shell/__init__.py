"""The shell: how `keyside run` shows an app's pages, in native windows or in a browser.

`runner.AppShell` starts the page server (`pages`), the host and then the windows (`desktop`,
with the Qt bridge in `qtbridge`) or browser tabs (`browser`). See docs/desktop.md.
"""
