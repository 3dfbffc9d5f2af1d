"""The records a run passes between its stages and writes down, as typed, frozen values.

They were string-keyed dicts, their keys literals in several modules. Each record here has the
one JSON form the files keep (``parameters.json``, run.json, the store's attributes, item.json's
``fcnseg:parameters``): ``to_json()`` gives exactly the dict written before, ``from_json()``
reads it back.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

#: The identity key that names the input's content: when only it changed, the run starts again.
FINGERPRINT = "input_fingerprint"
#: Identity keys that came after the first records, with the value every run before them had.
#: A key at that value is left out of the JSON, so a record made before the key existed is the
#: record of today's run with the same options (it resumes, it is complete) and the records of
#: runs that do not use it read byte for byte as before; a record without the key has that value.
LATER_KEYS: dict[str, Any] = {"tta": "none", "confidence": False, "normalize": "card", "normalization": None}


@dataclass(frozen=True, kw_only=True)
class RunIdentity:
    """What makes two runs produce the same chunks: a rerun must match it to reuse them.

    Compared as a whole (``==``) and, when two differ, described field by field (``differences``)
    so a refused rerun says what changed instead of only which keys.
    """

    input: str
    input_fingerprint: Mapping[str, Any]
    model_sha256: str
    device: str
    tile: int
    halo: int
    stitch: str
    bands: tuple[int, ...]
    probabilities: bool
    tta: str = "none"  # --tta: the views each tile's logits are averaged over (``models.tta``)
    confidence: bool = False  # --confidence: the store's per-pixel confidence band
    normalize: str = "card"  # --normalize: the card's normalisation, or one matched to the input (scene)
    #: --normalize scene: the per-band {"mean": [...], "std": [...]} computed for this input at plan time
    normalization: Mapping[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        """The identity as written to parameters.json and run.json (key order and values unchanged;
        a ``LATER_KEYS`` key only where it differs from its old value)."""
        every = self._every()
        return {k: v for k, v in every.items() if not (k in LATER_KEYS and v == LATER_KEYS[k])}

    def _every(self) -> dict[str, Any]:
        return {f.name: self._json_value(f.name) for f in fields(self)}

    def _json_value(self, name: str) -> Any:
        value = getattr(self, name)
        if name == "bands":
            return list(value)
        if name == "normalization" and value is not None:
            return {key: list(values) for key, values in value.items()}
        return dict(value) if name == FINGERPRINT else value

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RunIdentity:
        """The identity a run recorded; ValueError naming the keys a record lacks."""
        missing = [f.name for f in fields(cls) if f.name not in data and f.name not in LATER_KEYS]
        if missing:
            raise ValueError(f"run parameters without {', '.join(missing)}")
        values = {f.name: data.get(f.name, LATER_KEYS.get(f.name)) for f in fields(cls)}
        return cls(**{**values, "bands": tuple(values["bands"]), FINGERPRINT: dict(values[FINGERPRINT])})

    def changed(self, previous: Mapping[str, Any]) -> list[str]:
        """The keys whose recorded value (``previous``: a run's JSON record) differs from this one's."""
        mine, was = self._every(), {**LATER_KEYS, **previous}
        return sorted(k for k in mine if was.get(k) != mine[k])

    def differences(self, previous: Mapping[str, Any]) -> str:
        """What differs from the recorded run, readable: ``--tile 256 (was 512), model sha256 … (was …)``."""
        mine, was = self._every(), {**LATER_KEYS, **previous}
        return ", ".join(_described(key, mine[key], was.get(key), key in was) for key in self.changed(previous))


#: How each identity key is named in a refusal: the option that sets it, where one does.
_KEY_NAMES = {
    "input": "input", FINGERPRINT: "input content", "model_sha256": "model sha256", "device": "--device",
    "tile": "--tile", "halo": "--halo", "stitch": "--stitch", "bands": "--bands", "probabilities": "--probabilities",
    "tta": "--tta", "confidence": "--confidence", "normalize": "--normalize", "normalization": "scene normalisation",
}


def _described(key: str, now: Any, was: Any, recorded: bool) -> str:
    """One changed key: its name, this run's value and the recorded one."""
    name = _KEY_NAMES.get(key, key)
    if key == FINGERPRINT:
        return f"{name} (size, time or content changed)"
    return f"{name} {_shown(key, now)} (was {_shown(key, was) if recorded else 'not recorded'})"


def _shown(key: str, value: Any) -> str:
    """A value as a user would type it: band lists comma-separated, a hash shortened, flags on/off."""
    if key == "bands" and isinstance(value, list | tuple):
        return ",".join(str(b) for b in value)
    if key == "model_sha256" and isinstance(value, str) and len(value) > 12:
        return f"{value[:12]}…"
    if isinstance(value, bool):
        return "on" if value else "off"
    if key == "normalization" and value is None:
        return "none"
    if key == "normalization" and isinstance(value, Mapping):
        return "mean " + ",".join(f"{v:.4g}" for v in value["mean"]) + " std " + ",".join(f"{v:.4g}" for v in value["std"])
    return str(value)
