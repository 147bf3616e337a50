"""Named remotes: ``~/.config/hestdata/config.toml`` (or ``$HESTDATA_CONFIG``) and ``$HESTDATA_REMOTE``.

```toml
[remotes.lab]
url = "s3://lab-bucket/hest"
storage_options = { endpoint_url = "https://s3.example.org", anon = false }
```

A source that is not a URL or an existing path is looked up by name; ``$HESTDATA_REMOTE`` (a URL or a name) is
used when no source is given. Credentials in ``storage_options`` are never printed.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from hestdata.errors import InputError

SENSITIVE = ("key", "secret", "token", "password", "passwd", "credential", "session")


def config_path() -> Path:
    env = os.environ.get("HESTDATA_CONFIG")
    return Path(env) if env else Path.home() / ".config" / "hestdata" / "config.toml"


def load_remotes() -> dict[str, dict[str, Any]]:
    p = config_path()
    if not p.is_file():
        return {}
    try:
        data = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise InputError(p, f"invalid TOML: {exc}") from exc
    remotes = data.get("remotes", {})
    if not isinstance(remotes, dict):
        raise InputError(p, "[remotes] must be a table of named remotes")
    return remotes


# built-in named remotes; huggingface_hub reads the token from the usual login or $HF_TOKEN (never printed)
BUILTIN_REMOTES = {"hest1k": "hf://datasets/MahmoodLab/hest"}


def resolve_remote(source: str | os.PathLike[str] | None,
                   storage_options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
    """``(url_or_path, storage_options)`` for a URL, a local path, a configured remote name, or ``$HESTDATA_REMOTE``."""
    if source is None:
        source = os.environ.get("HESTDATA_REMOTE")
        if not source:
            raise InputError(None, "no source given and $HESTDATA_REMOTE is not set")
    s = os.fspath(source)
    opts = dict(storage_options or {})
    if "://" in s or os.path.exists(s) or os.path.isabs(s) or s.startswith("."):
        return s, opts
    remotes = load_remotes()
    if s not in remotes and s in BUILTIN_REMOTES:  # a user's config may redefine a built-in name
        return BUILTIN_REMOTES[s], opts
    if s in remotes:
        r = remotes[s]
        if "url" not in r:
            raise InputError(config_path(), f"remote {s!r} has no url")
        merged = dict(r.get("storage_options", {}))
        merged.update(opts)
        return str(r["url"]), merged
    raise InputError(None, f"{s!r} is neither a URL, an existing path, nor a remote in {config_path()}")


def redact(options: dict[str, Any]) -> dict[str, Any]:
    """A copy of storage options safe to print."""
    out: dict[str, Any] = {}
    for k, v in options.items():
        if isinstance(v, dict):
            out[k] = redact(v)
        elif any(w in k.lower() for w in SENSITIVE):
            out[k] = "***"
        else:
            out[k] = v
    return out
