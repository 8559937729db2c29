from django import forms


class KeyForm(forms.Form):
    """The pasted key is never rendered back: PasswordInput(render_value=False) leaves it empty on errors."""

    key = forms.CharField(
        label="OpenRouter management key",
        max_length=300,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off", "spellcheck": "false"}),
        help_text="Create one in OpenRouter → Settings → Management keys. Doow only reads usage with it.",
    )


class SingleKeyForm(KeyForm):
    """For a connection that reads one normal API key: only that key stands in for itself."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["key"].label = "OpenRouter API key"
        self.fields[
            "key"
        ].help_text = "The same key this connection reads. Doow only reads its usage counters."


class ConnectForm(KeyForm):
    name = forms.CharField(
        max_length=120,
        required=False,
        label="Connection name",
        help_text="Optional, e.g. “Production org”. Defaults to the OpenRouter organization.",
    )
    field_order = ["name", "key"]
