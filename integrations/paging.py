"""Pages of a log that only grows: the newest rows, counted and paged only so far back."""

from functools import cached_property

from django.core.paginator import Paginator

# 200 pages of 50: far more than anyone reads page by page; older events are a day filter away.
NEWEST_ROWS = 10_000


class NewestPaginator(Paginator):
    """A Paginator over at most the newest `NEWEST_ROWS` rows of an ordered query. Counting a log of
    millions of events cost a scan on every view, and a far page number (which anyone can type) an
    OFFSET as deep; here both stop at the bound."""

    @cached_property
    def counted(self) -> int:
        # A count over the limited query: PostgreSQL stops reading at the bound.
        return self.object_list[: NEWEST_ROWS + 1].count()

    @cached_property
    def count(self) -> int:
        return min(self.counted, NEWEST_ROWS)

    @property
    def truncated(self) -> bool:
        """Whether older rows exist beyond the pages."""
        return self.counted > NEWEST_ROWS
