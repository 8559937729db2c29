"""One row by equality (or `__gt`) on a few fields, read without Django's query compiler.

Every company page and download looks up the same four rows: the session, the user, the membership
with its company, the connection. Through the ORM each lookup cost ~0.5 ms of CPU to build and
compile, 2.3 of a one-key CSV export's 3.3 ms request (Django's fixed cost, `bench/detail.py`); the
same rows read by SQL worked out once per process cost ~0.1 ms each.

The SQL is built from the model's metadata, so it follows the model's fields; values travel as
parameters, prepared by their fields as a lookup would; each column goes through the converters
Django's compiler applies, so the instance holds what the ORM would return, on SQLite as on
PostgreSQL.
"""

import functools
from dataclasses import dataclass

from django.db import connection, models


@dataclass(frozen=True)
class _Plan:
    sql: str
    params: tuple[models.Field, ...]  # the field preparing each parameter
    ranges: tuple[tuple[int, int] | None, ...]  # an integer field's range, for each equality
    models: tuple[type[models.Model], ...]  # the model, then the joined one if any
    columns: tuple[tuple[str, ...], ...]  # attnames of each model's columns, in select order
    converters: tuple[tuple[int, list, object], ...]  # (select position, converters, column)


def get_one(model: type[models.Model], *, related: str | None = None, **conditions) -> models.Model | None:
    """The row of `model` matching every condition, or None. Conditions are `field=value`,
    `field__gt=value`, or `<related>__field=value` on the one non-null foreign key named by
    `related`, whose row is joined and cached on the instance (as select_related does). At most one
    row must match (a unique key)."""
    if None in conditions.values():
        raise ValueError("get_one compares with '=' and '>', which no NULL matches")
    plan = _plan(model, related, tuple(conditions))
    params = [
        field.get_db_prep_value(value, connection)
        for field, value in zip(plan.params, conditions.values(), strict=True)
    ]
    for value, bounds in zip(params, plan.ranges, strict=True):
        if bounds and not bounds[0] <= value <= bounds[1]:
            # No row holds it (the ORM's answer too); SQLite would refuse the number outright.
            return None
    with connection.cursor() as cursor:
        cursor.execute(plan.sql, params)
        row = cursor.fetchone()
    if row is None:
        return None
    values = list(row)
    for position, converters, column in plan.converters:
        value = values[position]
        for convert in converters:
            value = convert(value, column, connection)
        values[position] = value
    width = len(plan.columns[0])
    instance = model.from_db(connection.alias, plan.columns[0], values[:width])
    if related:
        joined = plan.models[1].from_db(connection.alias, plan.columns[1], values[width:])
        model._meta.get_field(related).set_cached_value(instance, joined)
    return instance


# Once per process: a plan holds the converters of the connection that first needed it, and Django's
# converters read nothing of their connection but what comes from settings (its time zone).
@functools.cache
def _plan(model: type[models.Model], related: str | None, conditions: tuple[str, ...]) -> _Plan:
    quote = connection.ops.quote_name
    tables = [(model, quote(model._meta.db_table))]
    join = ""
    if related:
        key = model._meta.get_field(related)
        if not key.many_to_one or key.null or key.related_model is model:
            raise ValueError(f"{model.__name__}.{related} is not a non-null foreign key to another model")
        target = key.related_model
        tables.append((target, quote(target._meta.db_table)))
        join = (
            f" INNER JOIN {tables[1][1]} ON {tables[1][1]}.{quote(key.target_field.column)}"
            f" = {tables[0][1]}.{quote(key.column)}"
        )
    select, columns, converters = [], [], []
    for table_model, table in tables:
        fields = table_model._meta.concrete_fields
        columns.append(tuple(field.attname for field in fields))
        for field in fields:
            column = field.get_col(table_model._meta.db_table)
            found = connection.ops.get_db_converters(column) + column.get_db_converters(connection)
            if found:
                converters.append((len(select), found, column))
            select.append(f"{table}.{quote(field.column)}")
    where, params, ranges = [], [], []
    for condition in conditions:
        name, _, operator = condition.partition("__")
        table_model, table = tables[0]
        if related and name == related and operator and operator != "gt":
            table_model, table = tables[1]
            name, _, operator = operator.partition("__")
        if operator not in ("", "gt"):
            raise ValueError(f"get_one does not read the condition {condition!r}")
        field = table_model._meta.pk if name == "pk" else table_model._meta.get_field(name)
        where.append(f"{table}.{quote(field.column)} {'>' if operator else '='} %s")
        params.append(field)
        ranges.append(None if operator else _integer_range(field))
    sql = f"SELECT {', '.join(select)} FROM {tables[0][1]}{join} WHERE {' AND '.join(where)}"  # noqa: S608
    return _Plan(
        sql, tuple(params), tuple(ranges), tuple(m for m, _ in tables), tuple(columns), tuple(converters)
    )


def _integer_range(field: models.Field) -> tuple[int, int] | None:
    stored = field.target_field if field.is_relation else field
    kind = stored.get_internal_type()
    return connection.ops.integer_field_range(kind) if kind in connection.ops.integer_field_ranges else None
