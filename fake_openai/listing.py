"""Cursor pagination as OpenAI list endpoints do it (limit, order, after, before)."""

from .errors import bad_request, invalid_value


def parse_list_params(args, allow_before=True, max_limit=100, default_limit=20):
    """Validate `limit` (1-max_limit, default default_limit), `order` (default desc), `after` and `before`."""
    raw_limit = args.get("limit")
    limit = default_limit
    if raw_limit is not None:
        try:
            limit = int(raw_limit)
        except ValueError:
            raise bad_request(
                f"Invalid 'limit': expected an integer, but got '{raw_limit}' instead.",
                param="limit",
                code="invalid_type",
            ) from None
        if limit < 1:
            raise bad_request(
                f"Invalid 'limit': integer below minimum value. Expected a value >= 1, but got {limit} instead.",
                param="limit",
                code="integer_below_min_value",
            )
        if limit > max_limit:
            raise bad_request(
                f"Invalid 'limit': integer above maximum value. Expected a value <= {max_limit}, "
                f"but got {limit} instead.",
                param="limit",
                code="integer_above_max_value",
            )
    order = args.get("order", "desc")
    if order not in ("asc", "desc"):
        raise invalid_value("order", order, ("asc", "desc"))
    before = args.get("before") if allow_before else None
    return {"limit": limit, "order": order, "after": args.get("after"), "before": before}


def paginate(items, limit, order, after=None, before=None):
    """One page of `items` (dicts with "id", oldest first) and whether more lie beyond it.

    `after` keeps what follows that id in the chosen order, `before` what precedes it; with
    `before` alone the page is the `limit` items closest to the cursor, still in list order.
    An unknown cursor id yields an empty page.
    """
    ordered = items if order == "asc" else items[::-1]
    start, stop = 0, len(ordered)
    ids = [item["id"] for item in ordered] if (after or before) else None
    if after:
        if after not in ids:
            return [], False
        start = ids.index(after) + 1
    if before:
        if before not in ids:
            return [], False
        stop = ids.index(before)
    if stop <= start:
        return [], False
    if before and not after:
        first = max(start, stop - limit)
        return ordered[first:stop], first > start
    return ordered[start : start + limit], start + limit < stop


def list_body(page, has_more):
    """The `{object: "list", data, first_id, last_id, has_more}` envelope."""
    return {
        "object": "list",
        "data": page,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
        "has_more": has_more,
    }
