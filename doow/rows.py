"""Statements on a few plain conditions, without Django's query compiler: rows read (one table, or a
row with the one its foreign key names and that row's child), updated or deleted, one row inserted.

Every company page and download reads the same four rows: the session, the user, the membership
with its company, the connection. Through the ORM each lookup cost ~0.5 ms of CPU to build and
compile, 2.3 of a one-key CSV export's 3.3 ms request (Django's fixed cost, `bench/detail.py`); the
same rows read by SQL worked out once per process cost ~0.1 ms each, and read two by two (the
session with its user, the membership with its company and connection) they are two round trips
instead of four. A sync's bookkeeping (its run,
its events, the connection's lease and the usage summaries' marks) is the same few statements for
every one of thousands of connections: through the ORM each cost 0.15-0.3 ms of a worker's CPU,
by SQL worked out once per process under 0.1 ms.

The SQL is built from the model's metadata, so it follows the model's fields; values travel as
parameters, prepared by their fields as a lookup would; each column goes through the converters
Django's compiler applies, so the instance holds what the ORM would return, on SQLite as on
PostgreSQL. On PostgreSQL each statement is prepared once its connection has run it a few times
(doow.db.planned_once_cursor), so it is no longer planned on every request.
"""

import functools
from dataclasses import dataclass

from django.db import connection, models
from django.db.models import signals
from django.db.models.expressions import Combinable, CombinedExpression, F, Value
from django.db.transaction import TransactionManagementError

from doow.db import planned_once_cursor


@dataclass(frozen=True)
class _Plan:
    sql: str
    models: tuple[type[models.Model], ...]  # the model, then the joined one and the child, if any
    columns: tuple[tuple[str, ...], ...]  # attnames of each model's columns, in select order
    converters: tuple[tuple[int, list, object], ...]  # (select position, converters, column)


def get_one(
    model: type[models.Model], /, *, related: str | None = None, for_update: bool = False, **conditions
) -> models.Model | None:
    """The row of `model` matching every condition, or None. Conditions are those `delete` takes,
    and `<related>__field=value` (any comparison) on the one foreign key named by `related`, whose
    row is joined and cached on the instance (as select_related does; a nullable key is a LEFT JOIN,
    and a row without one caches None). At most one row must match (a unique key). `for_update`
    locks the row until the transaction ends, as select_for_update() does (where the database has
    row locks)."""
    if for_update and not connection.in_atomic_block:
        # As select_for_update(): outside a transaction the lock would end with the statement.
        raise TransactionManagementError("get_one(for_update=True) outside a transaction")
    shape, params = _where_params(model, conditions, related)
    if params is None:
        return None
    return _read_one(_plan(model, related, shape, for_update), params, related)[0]


def get_one_and_child(
    model: type[models.Model],
    /,
    *,
    related: str,
    child: type[models.Model],
    child_key: str,
    child_pk,
    child_fields: tuple[str, ...] | None = None,
    **conditions,
) -> tuple[models.Model | None, models.Model | None]:
    """The row of `model` as get_one(related=...) reads it, and in the same statement the row of
    `child` whose primary key is `child_pk` and whose non-null foreign key `child_key` is that joined
    row (None without one): a membership with its company, and that company's connection whose id a
    URL names. `child_fields` reads only those fields of the child (the others load when first used,
    as with only()). The child's key caches the joined row."""
    shape, params = _where_params(model, conditions, related)
    if params is None:
        return None, None
    fields = tuple(child_fields) if child_fields is not None else None
    plan = _plan(model, related, shape, False, (child, child_key, fields))
    pk_field = child._meta.pk
    child_pk = pk_field.get_db_prep_value(child_pk, connection)
    if child_pk is not None and not column_holds(pk_field, child_pk):
        child_pk = None  # a number no column holds is no child, as in get_one; NULL equals nothing
    found, child_row = _read_one(plan, [child_pk, *params], related)
    if child_row is not None:
        child._meta.get_field(child_key).set_cached_value(child_row, getattr(found, related))
    return found, child_row


def _read_one(
    plan: _Plan, params: list, related: str | None
) -> tuple[models.Model | None, models.Model | None]:
    """The row's instance, its joined row cached on it, and the child row if the plan reads one."""
    with planned_once_cursor() as cursor:
        cursor.execute(plan.sql, params)
        row = cursor.fetchone()
    if row is None:
        return None, None
    values = _converted(row, plan.converters)
    model, start = plan.models[0], len(plan.columns[0])
    instance = model.from_db(connection.alias, plan.columns[0], values[:start])
    if related:
        key = model._meta.get_field(related)
        end = start + len(plan.columns[1])
        joined = None
        if getattr(instance, key.attname) is not None:
            joined = plan.models[1].from_db(connection.alias, plan.columns[1], values[start:end])
        key.set_cached_value(instance, joined)
        if len(plan.models) == 3 and values[end] is not None:  # the child's primary key
            return instance, plan.models[2].from_db(connection.alias, plan.columns[2], values[end:])
    return instance, None


def get_all(model: type[models.Model], /, **conditions) -> list[models.Model]:
    """Every row of `model` matching every condition (as `delete` takes them), in no set order."""
    found, columns = _select(model, None, conditions)
    return [model.from_db(connection.alias, columns, values) for values in found]


def get_values(model: type[models.Model], fields: tuple[str, ...], /, **conditions) -> list[dict]:
    """The named fields of every row matching every condition, each row a dict by field name (as
    QuerySet.values() gives them), in no set order."""
    found, _columns = _select(model, fields, conditions)
    return [dict(zip(fields, values, strict=True)) for values in found]


def _select(
    model: type[models.Model], fields: tuple[str, ...] | None, conditions: dict
) -> tuple[list, tuple]:
    """The matching rows' values (through Django's converters) and their fields' attnames."""
    shape, params = _where_params(model, conditions)
    if params is None:
        return [], ()
    sql, columns, converters = _select_plan(model, fields, shape)
    with planned_once_cursor() as cursor:
        cursor.execute(sql, params)
        found = cursor.fetchall()
    return [_converted(row, converters) for row in found], columns


def _converted(row, converters) -> list:
    """A row's values through the converters Django's compiler would apply."""
    values = list(row)
    for position, column_converters, column in converters:
        value = values[position]
        for convert in column_converters:
            value = convert(value, column, connection)
        values[position] = value
    return values


@functools.cache
def _select_plan(
    model: type[models.Model], names: tuple[str, ...] | None, shape: tuple
) -> tuple[str, tuple, tuple]:
    quote = connection.ops.quote_name
    meta = model._meta
    fields = meta.concrete_fields if names is None else [meta.get_field(name) for name in names]
    converters = []
    for position, field in enumerate(fields):
        column = field.get_col(model._meta.db_table)
        found = connection.ops.get_db_converters(column) + column.get_db_converters(connection)
        if found:
            converters.append((position, found, column))
    select = ", ".join(quote(field.column) for field in fields)
    sql = f"SELECT {select} FROM {quote(model._meta.db_table)} WHERE {_where_sql(model, shape)}"  # noqa: S608
    return sql, tuple(field.attname for field in fields), tuple(converters)


# Once per process: a plan holds the converters of the connection that first needed it, and Django's
# converters read nothing of their connection but what comes from settings (its time zone).
@functools.cache
def _plan(
    model: type[models.Model],
    related: str | None,
    shape: tuple,
    for_update: bool,
    child: tuple[type[models.Model], str, tuple[str, ...] | None] | None = None,
) -> _Plan:
    quote = connection.ops.quote_name
    tables = [(model, quote(model._meta.db_table), None)]
    join = ""
    if related:
        key = _related_key(model, related)
        target = key.related_model
        tables.append((target, quote(target._meta.db_table), None))
        join = (
            f" {'LEFT' if key.null else 'INNER'} JOIN {tables[1][1]} ON {tables[1][1]}.{quote(key.target_field.column)}"
            f" = {tables[0][1]}.{quote(key.column)}"
        )
    if child:
        child_model, child_key, child_fields = child
        key = _related_key(child_model, child_key)
        if key.null or key.related_model is not tables[1][0]:
            raise ValueError(f"{child_model.__name__}.{child_key} is not a non-null key to the joined row")
        meta = child_model._meta
        named = meta.concrete_fields if child_fields is None else [meta.get_field(n) for n in child_fields]
        # The primary key first: NULL there is no child row.
        child_columns = [meta.pk, *(field for field in named if field is not meta.pk)]
        table = quote(meta.db_table)
        tables.append((child_model, table, child_columns))
        join += (
            f" LEFT JOIN {table} ON {table}.{quote(key.column)} = {tables[1][1]}.{quote(key.target_field.column)}"
            f" AND {table}.{quote(meta.pk.column)} = %s"
        )
    select, columns, converters = [], [], []
    for table_model, table, chosen in tables:
        fields = table_model._meta.concrete_fields if chosen is None else chosen
        columns.append(tuple(field.attname for field in fields))
        for field in fields:
            column = field.get_col(table_model._meta.db_table)
            found = connection.ops.get_db_converters(column) + column.get_db_converters(connection)
            if found:
                converters.append((len(select), found, column))
            select.append(f"{table}.{quote(field.column)}")
    where = _where_sql(model, shape, related)
    sql = f"SELECT {', '.join(select)} FROM {tables[0][1]}{join} WHERE {where}"  # noqa: S608
    if for_update and connection.features.has_select_for_update:
        sql += " FOR UPDATE"
    return _Plan(sql, tuple(m for m, _table, _fields in tables), tuple(columns), tuple(converters))


def _related_key(model: type[models.Model], related: str) -> models.ForeignKey:
    key = model._meta.get_field(related)
    if not key.many_to_one or key.related_model is model:
        raise ValueError(f"{model.__name__}.{related} is not a foreign key to another model")
    return key


def column_holds(field: models.Field, value) -> bool:
    """Whether `field`'s column can hold `value`: False for a number outside an integer column's
    range. No row holds such a number (the ORM's answer to a lookup of it), and SQLite refuses it
    outright, so a lookup of it is no row rather than an error."""
    bounds = _integer_range(field)
    return not bounds or bounds[0] <= value <= bounds[1]


@functools.cache
def _integer_range(field: models.Field) -> tuple[int, int] | None:
    stored = field.target_field if field.is_relation else field
    kind = stored.get_internal_type()
    return connection.ops.integer_field_range(kind) if kind in connection.ops.integer_field_ranges else None


# The comparisons the statements take, named as Django's lookups are, and `ne` (not equal, which
# Django writes as exclude()); and `in`, `isnull`.
_COMPARISONS = {"": "=", "gt": ">", "gte": ">=", "lt": "<", "lte": "<=", "ne": "<>"}
# A comparison that a NULL passes too (Django's Q(field__isnull=True) | Q(field__lt=value)): a lease
# not held or run out, a mark not set or later.
_OR_NULL = {"lt_or_null": "<", "gt_or_null": ">"}
_OPERATORS = (*_COMPARISONS, *_OR_NULL, "in", "isnull")


def update(model: type[models.Model], where: dict, /, **values) -> int:
    """Set `values` on the rows of `model` matching every condition of `where` (see `delete`); the
    number of rows changed. A value is a plain value, prepared by its field as QuerySet.update
    prepares it, or `F(name) + n` for the field's own value plus the integer n."""
    if not values:
        raise ValueError("update needs a value to set")
    shape, params = _where_params(model, where)
    if params is None:
        return 0
    increments = {name: _increment(name, value) for name, value in values.items()}
    sets = tuple((name, increments[name] is not None) for name in values)
    sql, fields = _update_plan(model, sets, shape)
    prepared = [
        field.get_db_prep_save(value, connection) if increments[name] is None else increments[name]
        for field, (name, value) in zip(fields, values.items(), strict=True)
    ]
    with planned_once_cursor() as cursor:
        cursor.execute(sql, [*prepared, *params])
        return cursor.rowcount


def _increment(name: str, value) -> int | None:
    """n for `F(name) + n`; None for a plain value. Any other expression is refused rather than
    stored as its text."""
    if (
        isinstance(value, CombinedExpression)
        and value.connector == Combinable.ADD
        and isinstance(value.lhs, F)
        and value.lhs.name == name
        and isinstance(value.rhs, Value)
        and type(value.rhs.value) is int
    ):
        return value.rhs.value
    if isinstance(value, Combinable):
        raise ValueError(f"update sets plain values and F({name!r}) + n, not {value!r}")
    return None


def delete(model: type[models.Model], /, **conditions) -> int:
    """Delete the rows of `model` matching every condition; the number deleted. Conditions are
    `field=value`, `field__gt` (`__gte`, `__lt`, `__lte`)`=value`, `field__ne=value` (not equal; on
    a non-null field), `field__lt_or_null=value` (`__gt_or_null`: the comparison, or NULL),
    `field__in=values` and `field__isnull=True` or `False`. Only for a model no other row refers to
    and no signal watches: QuerySet.delete would collect, cascade and signal; this refuses such a
    model."""
    if signals.pre_delete.has_listeners(model) or signals.post_delete.has_listeners(model):
        raise ValueError(f"{model.__name__} has delete signals: use QuerySet.delete")
    shape, params = _where_params(model, conditions)
    if params is None:
        return 0
    with planned_once_cursor() as cursor:
        cursor.execute(_delete_plan(model, shape), params)
        return cursor.rowcount


def insert(model: type[models.Model], /, **values) -> models.Model:
    """Insert one row, as `model.objects.create(**values)` would (defaults, auto_now_add, foreign
    keys given as instances), without save()'s signals; the instance, with its primary key."""
    instance = model(**values)
    sql, fields, returns_key = _insert_plan(model)
    params = [field.get_db_prep_save(field.pre_save(instance, True), connection) for field in fields]
    with planned_once_cursor() as cursor:
        cursor.execute(sql, params)
        instance.pk = cursor.fetchone()[0] if returns_key else cursor.lastrowid
    instance._state.adding = False
    instance._state.db = connection.alias
    return instance


def _where_params(
    model: type[models.Model], conditions: dict, related: str | None = None
) -> tuple[tuple, list | None]:
    """The conditions' shape (what the SQL depends on: names, list lengths, IS [NOT] NULL) and
    their parameters; None for the parameters when no row can match."""
    shape, params = [], []
    for condition, value in conditions.items():
        field, operator, _joined = _condition_field(model, condition, related)
        if operator == "isnull":
            shape.append((condition, bool(value)))
            continue
        if value is None:
            raise ValueError(f"{condition}=None matches no row: use {condition.split('__')[0]}__isnull")
        if operator == "in":
            prepared = [field.get_db_prep_value(each, connection) for each in value]
            prepared = [each for each in prepared if column_holds(field, each)]
            if not prepared:
                return (), None
            shape.append((condition, len(prepared)))
            params.extend(prepared)
            continue
        prepared = field.get_db_prep_value(value, connection)
        if operator == "" and not column_holds(field, prepared):
            return (), None
        shape.append((condition, None))
        params.append(prepared)
    return tuple(shape), params


@functools.cache  # every statement of every request parses its conditions
def _condition_field(
    model: type[models.Model], condition: str, related: str | None = None
) -> tuple[models.Field, str, bool]:
    """(field, operator, whether the field is the `related` row's) of a condition."""
    name, _, operator = condition.partition("__")
    joined = bool(related) and name == related and operator.partition("__")[0] not in _OPERATORS
    if joined:
        model = _related_key(model, related).related_model
        name, _, operator = operator.partition("__")
    if operator not in _OPERATORS:
        raise ValueError(f"doow.rows does not read the condition {condition!r}")
    field = model._meta.pk if name == "pk" else model._meta.get_field(name)
    if operator == "ne" and field.null:
        # <> leaves out NULL, which exclude() keeps: the two would disagree.
        raise ValueError(f"{condition}: not equal is read on a non-null field only")
    return field, operator, joined


def _where_sql(model: type[models.Model], shape: tuple, related: str | None = None) -> str:
    """The WHERE clause; with `related`, each column named with its table, as the join needs."""
    quote = connection.ops.quote_name
    tables = {False: quote(model._meta.db_table)}
    if related:
        tables[True] = quote(_related_key(model, related).related_model._meta.db_table)
    clauses = []
    for condition, size in shape:
        field, operator, joined = _condition_field(model, condition, related)
        column = f"{tables[joined]}.{quote(field.column)}" if related else quote(field.column)
        if operator == "isnull":
            clauses.append(f"{column} IS {'' if size else 'NOT '}NULL")
        elif operator == "in":
            clauses.append(f"{column} IN ({', '.join(['%s'] * size)})")
        elif operator in _OR_NULL:
            clauses.append(f"({column} IS NULL OR {column} {_OR_NULL[operator]} %s)")
        else:
            clauses.append(f"{column} {_COMPARISONS[operator]} %s")
    if not clauses:
        raise ValueError("a statement of doow.rows needs a condition")  # never every row by accident
    return " AND ".join(clauses)


@functools.cache
def _update_plan(
    model: type[models.Model], sets: tuple[tuple[str, bool], ...], shape: tuple
) -> tuple[str, tuple]:
    """The UPDATE for `sets` ((field name, whether it is an increment), ...) and their fields."""
    quote = connection.ops.quote_name
    fields = tuple(model._meta.get_field(name) for name, _increment in sets)
    assignments = ", ".join(
        f"{quote(field.column)} = {quote(field.column)} + %s" if increment else f"{quote(field.column)} = %s"
        for field, (_name, increment) in zip(fields, sets, strict=True)
    )
    sql = f"UPDATE {quote(model._meta.db_table)} SET {assignments} WHERE {_where_sql(model, shape)}"  # noqa: S608
    return sql, fields


@functools.cache
def _delete_plan(model: type[models.Model], shape: tuple) -> str:
    if model._meta.related_objects:
        raise ValueError(f"rows of other models refer to {model.__name__}: use QuerySet.delete")
    quote = connection.ops.quote_name
    return f"DELETE FROM {quote(model._meta.db_table)} WHERE {_where_sql(model, shape)}"  # noqa: S608


@functools.cache
def _insert_plan(model: type[models.Model]) -> tuple[str, tuple, bool]:
    meta = model._meta
    if any(field.has_db_default() for field in meta.concrete_fields):
        raise ValueError(f"{model.__name__} has a database default: use objects.create")
    quote = connection.ops.quote_name
    fields = tuple(field for field in meta.concrete_fields if field is not meta.auto_field)
    returns_key = connection.features.can_return_columns_from_insert
    sql = (
        f"INSERT INTO {quote(meta.db_table)} ({', '.join(quote(field.column) for field in fields)}) "  # noqa: S608
        f"VALUES ({', '.join(['%s'] * len(fields))})"
        + (f" RETURNING {quote(meta.pk.column)}" if returns_key else "")
    )
    return sql, fields, returns_key
