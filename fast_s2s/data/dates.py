"""Human-readable dates and their ISO form, for the date-normalisation task.

    rng = random.Random(0)
    random_date_pair(rng)   # e.g. ("Tue, 3 March 1998", "1998-03-03")

Dates are uniform over 1950-01-01 .. 2049-12-31, so a two-digit year is unambiguous: 50-99 mean
1950-1999 and 00-49 mean 2000-2049. Numeric day/month formats are day first ("03/03/98" is
3 March); year-first formats are year, month, day. Names are English and come from fixed tables
(never the locale), and weekday names are always those of the date itself.
"""

from __future__ import annotations

import datetime
import random

MIN_DATE = datetime.date(1950, 1, 1)
MAX_DATE = datetime.date(2049, 12, 31)

MONTHS: tuple[str, ...] = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)  # fmt: skip
WEEKDAYS: tuple[str, ...] = (
    "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday",
)  # fmt: skip

# Fields: {dow} weekday name, {dw} weekday abbreviation, {month} month name, {mon} month
# abbreviation, {d} day, {dd} zero-padded day, {do} ordinal day ("3rd"), {m} month,
# {mm} zero-padded month, {yyyy} year, {yy} two-digit year.
DATE_PATTERNS: tuple[str, ...] = (
    "{dow} {d} {month} {yyyy}",  # tuesday 3 march 1998
    "{dd}/{mm}/{yy}",  # 03/03/98
    "{month} {do}, {yyyy}",  # March 3rd, 1998
    "{d} {mon} {yyyy}",  # 3 Mar 1998
    "{yyyy}.{mm}.{dd}",  # 1998.03.03
    "{dw}, {d} {month} {yyyy}",  # Tue, 3 March 1998
    "{month} {d} {yyyy}",  # march 3 1998
    "{do} of {month} {yyyy}",  # 3rd of March 1998
    "{dd}/{mm}/{yyyy}",  # 03/03/1998
    "{d}.{m}.{yyyy}",  # 3.3.1998
    "{dd}-{mon}-{yy}",  # 03-Mar-98
    "{dow}, {month} {d}, {yyyy}",  # Tuesday, March 3, 1998
    "{yyyy}/{mm}/{dd}",  # 1998/03/03
    "{mon} {d}, {yyyy}",  # Mar 3, 1998
    "{d} {month} {yy}",  # 3 March 98
    "{dw} {dd} {mon} {yyyy}",  # Tue 03 Mar 1998
    "{dow} the {do} of {month} {yyyy}",  # Tuesday the 3rd of March 1998
    "{yyyy}{mm}{dd}",  # 19980303
    "{d} {month}, {yyyy}",  # 3 March, 1998
)

CASES: tuple[str, ...] = ("title", "lower", "upper")


def ordinal(day: int) -> str:
    """1 -> "1st", 2 -> "2nd", 3 -> "3rd", 11 -> "11th", 22 -> "22nd"."""
    suffix = "th" if 10 <= day % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")
    return f"{day}{suffix}"


def format_date(date: datetime.date, pattern: str, case: str = "title") -> str:
    """Write `date` in `pattern` (see DATE_PATTERNS for the fields).

    case: "title" (names as usually written, "March"), "lower" or "upper" (the whole string).
    """
    if case not in CASES:
        raise ValueError(f"case must be one of {list(CASES)}, got {case!r}")
    weekday = WEEKDAYS[date.weekday()]
    month = MONTHS[date.month - 1]
    fields = {
        "dow": weekday,
        "dw": weekday[:3],
        "month": month,
        "mon": month[:3],
        "d": str(date.day),
        "dd": f"{date.day:02d}",
        "do": ordinal(date.day),
        "m": str(date.month),
        "mm": f"{date.month:02d}",
        "yyyy": f"{date.year:04d}",
        "yy": f"{date.year % 100:02d}",
    }
    try:
        text = pattern.format_map(fields)
    except (KeyError, IndexError, ValueError) as error:
        raise ValueError(
            f"bad date pattern {pattern!r} ({error}); fields are {sorted(fields)}"
        ) from None
    if case == "lower":
        return text.lower()
    if case == "upper":
        return text.upper()
    return text


def random_date(rng: random.Random) -> datetime.date:
    """A date uniform over MIN_DATE .. MAX_DATE."""
    return datetime.date.fromordinal(rng.randint(MIN_DATE.toordinal(), MAX_DATE.toordinal()))


def random_date_pair(rng: random.Random) -> tuple[str, str]:
    """(human-readable date, ISO "YYYY-MM-DD"): a random date, pattern and case from `rng`."""
    date = random_date(rng)
    pattern = rng.choice(DATE_PATTERNS)
    case = rng.choice(CASES)
    return format_date(date, pattern, case), date.isoformat()
