"""The file store: an app's secrets in one passphrase-encrypted file, for machines without an OS vault.

File format (UTF-8 JSON, version 1):

    {"format": "keyside-file-vault", "version": 1, "cipher": "AES-256-GCM",
     "kdf": {"name": "scrypt", "n": 131072, "r": 8, "p": 1, "salt": "<base64>"},
     "key_check": "<base64>", "nonce": "<base64>", "ciphertext": "<base64>"}

scrypt turns the passphrase into 48 bytes. The first 32 are the AES-256-GCM key, and the last
16 are stored as `key_check`, so a wrong passphrase can be distinguished from a damaged file. Every
field except `nonce` and `ciphertext` is bound to the ciphertext as associated data, so an
edited header fails authentication. The plaintext is the JSON object of name to value.

Writes go to a temporary file in the same folder, are flushed to disk, then replace the vault
in one rename, so a crash leaves either the old or the new file. A failed read or a wrong
passphrase never leads to a write.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import os
import secrets
import stat
import sys
import tempfile
import unicodedata
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from keyside.vault.errors import (
    PASSPHRASE_REQUIRED,
    VAULT_CORRUPT,
    VAULT_UNAVAILABLE,
    VAULT_WRITE_FAILED,
    WEAK_PASSPHRASE,
    WRONG_PASSPHRASE,
    VaultError,
)
from keyside.vault.locking import exclusive_lock
from keyside.vault.store import Change, Entries, decode_entries, encode_entries

log = logging.getLogger(__name__)

FILE_FORMAT = "keyside-file-vault"
FILE_VERSION = 1
CIPHER = "AES-256-GCM"
KDF_NAME = "scrypt"

# scrypt cost for new files: N=2**17, r=8, p=1 uses 128 MiB and took 0.45-0.47 s per derivation
# on one core of a 2-core x86_64 machine (cryptography 48, three one-off runs). It is the value
# the RustCrypto scrypt crate recommends, after the OWASP cheat sheet.
SCRYPT_N = 2**17
SCRYPT_R = 8
SCRYPT_P = 1
# Bounds accepted when reading a file, so an edited header cannot make us allocate gigabytes.
# 2**14 is RFC 7914's value for interactive logins, and 2**20 uses 1 GiB.
MIN_SCRYPT_N = 2**14
MAX_SCRYPT_N = 2**20
MAX_SCRYPT_P = 4
SALT_BYTES = 16
NONCE_BYTES = 12  # the GCM standard nonce size
KEY_BYTES = 32
KEY_CHECK_BYTES = 16
# A vault contains a few keys, so a larger file is not a keyside vault.
MAX_FILE_BYTES = 1024 * 1024
# Checked when a new file vault is created. An existing file opens with the passphrase it has.
MIN_PASSPHRASE_CHARS = 8
FILE_MODE = 0o600
DOCUMENT_FIELDS = frozenset({"format", "version", "cipher", "kdf", "key_check", "nonce", "ciphertext"})
KDF_FIELDS = frozenset({"name", "n", "r", "p", "salt"})

CORRUPT_FIX = ("Restore the file from a backup. To start over, move the file away and set the "
               "secrets again; the old file cannot be repaired.")


def _b64decode(value: Any, field: str, path: Path) -> bytes:
    if not isinstance(value, str):
        raise _corrupt(path, f"field {field} is not a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise _corrupt(path, f"field {field} is not valid base64") from None


def _b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _corrupt(path: Path, problem: str) -> VaultError:
    return VaultError(f"The file vault {path} is damaged or was modified: {problem}.", reason=VAULT_CORRUPT,
                      fix=CORRUPT_FIX)


def _associated_data(header: dict[str, Any]) -> bytes:
    return json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")


def _passphrase_bytes(passphrase: str) -> bytes:
    # NFC, so the same passphrase typed through different input methods gives the same bytes.
    return unicodedata.normalize("NFC", passphrase).encode("utf-8")


class _Header:
    """The parsed, bounds-checked header of a vault file."""

    def __init__(self, path: Path, document: Any):
        if not isinstance(document, dict):
            raise _corrupt(path, "the file is not a JSON object")
        unknown = set(document) - DOCUMENT_FIELDS
        if unknown:
            raise _corrupt(path, f"unknown field(s) {', '.join(sorted(unknown))}")

        if document.get("format") != FILE_FORMAT:
            raise _corrupt(path, f"format is not {FILE_FORMAT!r}")
        version = document.get("version")
        if version != FILE_VERSION:
            raise VaultError(f"The file vault {path} has version {version!r}, but this keyside reads version "
                             f"{FILE_VERSION}.", reason=VAULT_CORRUPT,
                             fix="Open it with the keyside version that wrote it, or restore a backup.")
        if document.get("cipher") != CIPHER:
            raise _corrupt(path, f"cipher is not {CIPHER}")

        kdf = document.get("kdf")
        if not isinstance(kdf, dict) or kdf.get("name") != KDF_NAME or set(kdf) != KDF_FIELDS:
            raise _corrupt(path, f"kdf is not {KDF_NAME} with fields {', '.join(sorted(KDF_FIELDS))}")
        n, r, p = kdf.get("n"), kdf.get("r"), kdf.get("p")
        if not (isinstance(n, int) and MIN_SCRYPT_N <= n <= MAX_SCRYPT_N and n & (n - 1) == 0):
            raise _corrupt(path, f"scrypt n must be a power of two from {MIN_SCRYPT_N} to {MAX_SCRYPT_N}")
        if r != SCRYPT_R or not (isinstance(p, int) and 1 <= p <= MAX_SCRYPT_P):
            raise _corrupt(path, f"scrypt r must be {SCRYPT_R} and p from 1 to {MAX_SCRYPT_P}")
        self.n, self.r, self.p = n, r, p

        self.salt = _b64decode(kdf.get("salt"), "kdf.salt", path)
        self.key_check = _b64decode(document.get("key_check"), "key_check", path)
        self.nonce = _b64decode(document.get("nonce"), "nonce", path)
        self.ciphertext = _b64decode(document.get("ciphertext"), "ciphertext", path)
        if len(self.salt) != SALT_BYTES or len(self.key_check) != KEY_CHECK_BYTES or len(self.nonce) != NONCE_BYTES:
            raise _corrupt(path, "salt, key_check or nonce has the wrong length")
        self.associated_data = _associated_data(_header_fields(n, r, p, self.salt, self.key_check))


def _header_fields(n: int, r: int, p: int, salt: bytes, key_check: bytes) -> dict[str, Any]:
    return {
        "format": FILE_FORMAT,
        "version": FILE_VERSION,
        "cipher": CIPHER,
        "kdf": {"name": KDF_NAME, "n": n, "r": r, "p": p, "salt": _b64encode(salt)},
        "key_check": _b64encode(key_check),
    }


def read_header(path: Path) -> dict[str, Any]:
    """Check the header of the vault file at `path` without a passphrase and return its cost parameters.

    Raises VaultError(vault_corrupt) for a file that is not a version 1 keyside vault, and
    OSError when the file cannot be read.
    """
    with path.open("rb") as handle:
        data = handle.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise _corrupt(path, f"it is larger than {MAX_FILE_BYTES} bytes")
    try:
        document = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise _corrupt(path, "it is not a JSON document") from None
    header = _Header(path, document)
    return {"version": FILE_VERSION, "n": header.n, "r": header.r, "p": header.p}


class FileStore:
    """An app's secrets in one AES-256-GCM file at `path`, keyed by a passphrase through scrypt."""

    kind = "file"

    def __init__(self, path: Path, passphrase: str | None, *, scrypt_n: int = SCRYPT_N):
        """Bind to `path`. `scrypt_n` is the cost for a file created here (tests pass MIN_SCRYPT_N)."""
        if not passphrase:
            raise VaultError("The file vault needs a passphrase and none was given.", reason=PASSPHRASE_REQUIRED,
                             fix="Pass it with --passphrase-fd N, set KEYSIDE_VAULT_PASSPHRASE, or run in a "
                                 "terminal to be prompted.")
        if not (MIN_SCRYPT_N <= scrypt_n <= MAX_SCRYPT_N and scrypt_n & (scrypt_n - 1) == 0):
            raise ValueError(f"scrypt_n must be a power of two from {MIN_SCRYPT_N} to {MAX_SCRYPT_N}")
        self.path = Path(path).expanduser().absolute()
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self.backend_name = f"file ({self.path})"
        self._passphrase = _passphrase_bytes(passphrase)
        self._scrypt_n = scrypt_n
        # The derived key for the salt seen last, so re-reading before each write costs no scrypt run.
        self._key_cache: tuple[tuple[bytes, int, int, int], bytes, bytes] | None = None

    def exists(self) -> bool:
        return self.path.is_file()

    def load(self) -> Entries:
        with self._locked():
            return self._read()[0]

    def update(self, change: Change) -> Entries:
        with self._locked():
            current, header = self._read()
            updated = change(dict(current))
            if updated != current:
                self._write(updated, header)
            return dict(updated)

    def _locked(self) -> Any:
        if not self.path.parent.is_dir():
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            except OSError as error:
                raise VaultError(f"Cannot create the folder {self.path.parent}: {error.strerror}.",
                                 reason=VAULT_WRITE_FAILED,
                                 fix="Choose a writable location with --vault-file PATH.") from None
        return exclusive_lock(self.lock_path, f"file:{self.path.resolve()}")

    def _read(self) -> tuple[Entries, _Header | None]:
        """Return the decrypted entries and the header, or ({}, None) when no file exists yet."""
        try:
            with self.path.open("rb") as handle:
                info = os.fstat(handle.fileno())
                data = handle.read(MAX_FILE_BYTES + 1)
        except FileNotFoundError:
            return {}, None
        except OSError as error:
            raise VaultError(f"Cannot read the file vault {self.path}: {error.strerror}.", reason=VAULT_UNAVAILABLE,
                             fix="Check that the file exists and that you can read it.") from None
        if len(data) > MAX_FILE_BYTES:
            raise _corrupt(self.path, f"it is larger than {MAX_FILE_BYTES} bytes")
        if sys.platform != "win32" and stat.S_IMODE(info.st_mode) & 0o077:
            log.warning("file vault readable by others path=%s mode=%o, rewritten as 0600 on the next change",
                        self.path, stat.S_IMODE(info.st_mode))
        try:
            document = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise _corrupt(self.path, "it is not a JSON document") from None

        header = _Header(self.path, document)
        key, key_check = self._derive(header.salt, header.n, header.r, header.p)
        if not hmac.compare_digest(key_check, header.key_check):
            raise VaultError(f"The passphrase does not open the file vault {self.path}.", reason=WRONG_PASSPHRASE,
                             fix="Enter the passphrase the vault was created with. The file was not changed.")
        try:
            plaintext = AESGCM(key).decrypt(header.nonce, header.ciphertext, header.associated_data)
        except InvalidTag:
            raise _corrupt(self.path, "authentication failed") from None
        try:
            text = plaintext.decode("utf-8")
        except UnicodeDecodeError:
            raise _corrupt(self.path, "the decrypted data is not UTF-8") from None
        return decode_entries(text, source=f"The file vault {self.path}", fix=CORRUPT_FIX), header

    def _derive(self, salt: bytes, n: int, r: int, p: int) -> tuple[bytes, bytes]:
        params = (salt, n, r, p)
        if self._key_cache is not None and self._key_cache[0] == params:
            return self._key_cache[1], self._key_cache[2]
        output = Scrypt(salt=salt, length=KEY_BYTES + KEY_CHECK_BYTES, n=n, r=r, p=p).derive(self._passphrase)
        key, key_check = output[:KEY_BYTES], output[KEY_BYTES:]
        self._key_cache = (params, key, key_check)
        return key, key_check

    def _write(self, entries: Entries, header: _Header | None) -> None:
        if header is None:
            # A new file: check the passphrase and draw a salt. Later writes keep salt and cost,
            # so the key is derived once per process.
            if len(self._passphrase.decode("utf-8")) < MIN_PASSPHRASE_CHARS:
                raise VaultError(f"A new file vault needs a passphrase of at least {MIN_PASSPHRASE_CHARS} "
                                 "characters.", reason=WEAK_PASSPHRASE,
                                 fix="Choose a longer passphrase; a few random words work well.")
            salt, n, r, p = secrets.token_bytes(SALT_BYTES), self._scrypt_n, SCRYPT_R, SCRYPT_P
        else:
            salt, n, r, p = header.salt, header.n, header.r, header.p
        key, key_check = self._derive(salt, n, r, p)

        fields = _header_fields(n, r, p, salt, key_check)
        nonce = secrets.token_bytes(NONCE_BYTES)
        ciphertext = AESGCM(key).encrypt(nonce, encode_entries(entries).encode("utf-8"), _associated_data(fields))
        document = {**fields, "nonce": _b64encode(nonce), "ciphertext": _b64encode(ciphertext)}
        self._replace_file(json.dumps(document, indent=1).encode("utf-8") + b"\n")
        log.info("file vault written path=%s entries=%d", self.path, len(entries))

    def _replace_file(self, data: bytes) -> None:
        """Write `data` to a temporary file beside the vault, flush it to disk, then rename it over."""
        temp_path: str | None = None
        try:
            fd, temp_path = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
            with os.fdopen(fd, "wb") as handle:
                if sys.platform != "win32":
                    os.fchmod(handle.fileno(), FILE_MODE)
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp_path, self.path)
            temp_path = None
            _fsync_folder(self.path.parent)
        except OSError as error:
            raise VaultError(f"Cannot write the file vault {self.path}: {error.strerror or error}.",
                             reason=VAULT_WRITE_FAILED,
                             fix="Check free disk space and that you can write to the folder; "
                                 "the previous file is unchanged.") from None
        finally:
            if temp_path is not None:
                try:
                    os.unlink(temp_path)
                except OSError:
                    pass


def _fsync_folder(folder: Path) -> None:
    # Makes the rename itself durable on POSIX. Windows cannot open a folder for fsync.
    if sys.platform == "win32":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
