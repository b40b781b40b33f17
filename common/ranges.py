"""Integer lists on the command line: `60`, `36,48,60` or inclusive ranges `36:84:4`."""

from condgen.errors import RecipeError


def parse_int_list(text: str, option: str) -> list[int]:
    """Parse `36:84:4` (inclusive end, step defaults to 1), `60` or comma lists of both.

    `option` names the value in error messages, e.g. "--pitches". The result keeps
    the order and duplicates of the text. Raises RecipeError on bad syntax.
    """
    values: list[int] = []
    for item in text.split(","):
        item = item.strip()
        parts = [part.strip() for part in item.split(":")]
        try:
            numbers = [int(part) for part in parts]
        except ValueError:
            raise RecipeError(f"{option}: {item!r} is not an integer or a START:STOP[:STEP] range; use e.g. 60, 36:84:4 or 36,48,60") from None
        if len(numbers) == 1:
            values.append(numbers[0])
            continue
        if len(numbers) > 3:
            raise RecipeError(f"{option}: {item!r} has more than three fields; use START:STOP[:STEP], e.g. 36:84:4")
        start, stop = numbers[0], numbers[1]
        step = numbers[2] if len(numbers) == 3 else 1
        if step < 1:
            raise RecipeError(f"{option}: step {step} in {item!r} must be at least 1")
        if stop < start:
            raise RecipeError(f"{option}: range {item!r} ends below its start; write START:STOP with START <= STOP")
        values.extend(range(start, stop + 1, step))
    return values
