from django.db.models import QuerySet

from doow.models import Company, Membership


def company_members(*, company: Company) -> QuerySet[Membership]:
    return Membership.objects.filter(company=company).select_related("user").order_by("role", "user__email")
