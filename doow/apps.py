from django.apps import AppConfig


class DoowConfig(AppConfig):
    name = "doow"
    verbose_name = "Doow"
