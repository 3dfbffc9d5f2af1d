"""The item's ``datetime``: when the input was acquired, if it says so.

Catalogues search by ``datetime`` as the time the data shows; a segmentation is of the scene as
acquired, so that time is taken from the input's metadata when it carries one (GDAL's default and
IMAGERY metadata domains, keys below, most specific first). ``TIFFTAG_DATETIME`` is not one: the
TIFF spec defines it as the file's creation time, which for a reprojected or re-encoded scene is
the day someone ran gdal_translate, not the day the sensor saw the ground; nor is a bare
``DATETIME`` (GDAL maps TIFFTAG_DATETIME to that name in some drivers). Without an acquisition
time the item's ``datetime`` is the processing time (STAC requires one of datetime or
start/end; a null datetime with an invented range would claim more than is known), and the item
says so in ``fcnseg:datetime_source``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import rasterio
from rasterio.errors import RasterioError

log = logging.getLogger(__name__)

#: Metadata keys that hold the acquisition time, most specific first, each with the key of a
#: separate time of day where the date comes alone (Landsat's DATE_ACQUIRED + SCENE_CENTER_TIME).
#: TIFFTAG_DATETIME and DATETIME (the file's creation, per the TIFF spec) are deliberately absent.
ACQUISITION_KEYS: tuple[tuple[str, str | None], ...] = (
    ("ACQUISITIONDATETIME", None),  # GDAL's IMAGERY domain (DigitalGlobe, Pleiades, ...)
    ("ACQUISITION_DATETIME", None),
    ("DATE_ACQUIRED", "SCENE_CENTER_TIME"),  # Landsat MTL
    ("ACQUISITION_DATE", "ACQUISITION_TIME"),
    ("IMAGING_DATE", "IMAGING_TIME"),  # SPOT DIMAP
    ("SENSING_TIME", None),
    ("SENSING_START", None),
    ("PRODUCT_START_TIME", None),  # Sentinel-2 SAFE
)
#: GDAL metadata domains searched, in order.
DOMAINS: tuple[str | None, ...] = (None, "IMAGERY")

DATETIME_PATTERN = re.compile(
    r"^(?P<y>\d{4})[-:/](?P<m>\d{2})[-:/](?P<d>\d{2})"
    r"(?:[T ]+(?P<H>\d{2}):(?P<M>\d{2})(?::(?P<S>\d{2})(?:\.(?P<f>\d+))?)?)?"
    r"\s*(?P<tz>Z|UTC|GMT|[+-]\d{2}:?\d{2})?$",
    re.IGNORECASE,
)


def input_datetime(input_path: str | Path) -> datetime | None:
    """The input's acquisition time as UTC, or None when it has none (or cannot be opened)."""
    try:
        with rasterio.open(input_path) as src:
            tags = [src.tags(ns=domain) if domain else src.tags() for domain in DOMAINS]
    except (RasterioError, OSError) as e:
        log.debug("cannot read the acquisition time of %s: %s", input_path, e)
        return None
    for domain_tags in tags:
        found = acquisition_datetime(domain_tags)
        if found is not None:
            return found
    return None


def acquisition_datetime(tags: Mapping[str, str]) -> datetime | None:
    """The first of ACQUISITION_KEYS in ``tags`` (any case) that parses as a time; None if none."""
    upper = {key.upper(): value for key, value in tags.items()}
    for key, time_key in ACQUISITION_KEYS:
        value = upper.get(key)
        if not value:
            continue
        if time_key and upper.get(time_key) and not re.search(r"\d[T ]\d", value.strip()):
            time_of_day = upper[time_key].strip().strip('"')
            value = f"{value.strip()}T{time_of_day}"
        parsed = parse_datetime(value)
        if parsed is not None:
            return parsed
        log.warning("metadata %s = %r is not a date and time; ignored", key, value)
    return None


def parse_datetime(text: str) -> datetime | None:
    """A date (and time) as UTC: ISO 8601 or TIFF's ``YYYY:MM:DD HH:MM:SS``; no zone means UTC
    (TIFF stores none, and UTC is the convention for acquisition times). None if not a date."""
    match = DATETIME_PATTERN.match(text.strip().strip('"'))
    if not match:
        return None
    g = match.groupdict()
    try:
        value = datetime(int(g["y"]), int(g["m"]), int(g["d"]), int(g["H"] or 0), int(g["M"] or 0),
                         int(g["S"] or 0), int((g["f"] or "0")[:6].ljust(6, "0")), tzinfo=_zone(g["tz"]))
    except ValueError:  # e.g. TIFF's blank "0000:00:00 00:00:00"
        return None
    return value.astimezone(UTC)


def utc(value: datetime) -> datetime:
    """A naive time taken as UTC; an aware one converted to UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def iso(value: datetime) -> str:
    """RFC 3339 in UTC with a Z, to the second: what STAC's date-time fields want."""
    return utc(value).isoformat(timespec="seconds").replace("+00:00", "Z")


def _zone(text: str | None) -> timezone:
    if not text or text.upper() in ("Z", "UTC", "GMT"):
        return UTC
    sign = -1 if text[0] == "-" else 1
    digits = text[1:].replace(":", "")
    return timezone(sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:])))
