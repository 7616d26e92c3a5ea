"""Print the degradation step reference (docs/degradations.md's table) from the code itself."""

from __future__ import annotations

import dataclasses

from esrforge.data.pipeline import STEPS
from esrforge.data.steps import Choice, Range


def default_text(value: object) -> str:
    if isinstance(value, (Range, Choice)):
        return str(value)
    return "-" if value is None or value == () else f"{value}"


def main() -> None:
    for name, cls in STEPS.items():
        doc = " ".join((cls.__doc__ or "").strip().split("\n\n")[0].split())  # the first paragraph
        print(f"### `{name}`\n\n{doc}\n")
        print("| field | default | allowed | meaning |\n|---|---|---|---|")
        for f in dataclasses.fields(cls):
            meta = f.metadata
            if meta.get("kind") in ("range", "number"):
                allowed = f"{meta['lo']:g} to {meta['hi']:g}" + (" (whole)" if meta.get("integer") else "")
            elif meta.get("kind") == "choice":
                allowed = ", ".join(meta["allowed"])
            else:
                allowed = meta.get("allowed_text", "-")
            print(f"| `{f.name}` | {default_text(f.default)} | {allowed} | {meta.get('doc', '')} |")
        print()


if __name__ == "__main__":
    main()
