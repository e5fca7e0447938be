#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""validate_json.py SCHEMA FILE...: check JSON files against a JSON Schema.

Exits 0 when every FILE validates; otherwise prints each failure (file, the path to the
offending value, and why) to stderr and exits 1. Exit 2 for a usage error or a bad schema.
Runs with Debian's /usr/bin/python3 and python3-jsonschema (4.10: draft 2020-12, draft-07).
"""
import json
import sys

import jsonschema


def load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def where(error):
    return "/" + "/".join(str(p) for p in error.absolute_path)


def main(argv):
    if len(argv) < 3:
        print("usage: validate_json.py SCHEMA FILE...", file=sys.stderr)
        return 2
    try:
        schema = load(argv[1])
        validator_class = jsonschema.validators.validator_for(schema)
        validator_class.check_schema(schema)
    except (OSError, ValueError, jsonschema.exceptions.SchemaError) as e:
        print(f"{argv[1]}: bad schema: {e}", file=sys.stderr)
        return 2
    validator = validator_class(schema)

    failed = False
    for path in argv[2:]:
        try:
            doc = load(path)
        except (OSError, ValueError) as e:
            print(f"{path}: not JSON: {e}", file=sys.stderr)
            failed = True
            continue
        errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
        for e in errors:
            print(f"{path}: {where(e)}: {e.message}", file=sys.stderr)
        failed = failed or bool(errors)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
