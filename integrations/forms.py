from django import forms

from integrations.models import EventKind, EventLevel


class DisconnectForm(forms.Form):
    confirm = forms.BooleanField(
        required=True, label="I understand Doow deletes the stored key now and stops syncing this connection."
    )
    delete_usage = forms.BooleanField(
        required=False, label="Also delete the usage history already synced (finance loses it)."
    )


class EventFilterForm(forms.Form):
    level = forms.ChoiceField(choices=[("", "All levels"), *EventLevel.choices], required=False)
    kind = forms.ChoiceField(choices=[("", "All kinds"), *EventKind.choices], required=False)
    day = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    connection = forms.IntegerField(required=False, widget=forms.HiddenInput)
