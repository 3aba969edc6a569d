"""Forms of the settings page: the project's settings and its members."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib.auth.models import User

from annotation.models import Membership, Project
from annotation.selectors import check_class_weights, check_query_source, project_sources


class ProjectSettingsForm(forms.ModelForm[Project]):
    class Meta:
        model = Project
        fields = list(Project.EDITABLE_SETTINGS)
        widgets = {
            "description": forms.Textarea(attrs={"rows": 2}),
            "class_weights": forms.Textarea(attrs={"rows": 2}),
        }
        labels = {
            "ssl_method": "Self-supervised method",
            "finetune_every": "Fine-tune every N batches",
            "finetune_image_size": "Fine-tuned image size",
            "input_crop": "What the model sees of each image",
            "class_weights": "Class weights (cost-aware strategy)",
            "split_work": "Split work: a batch per annotator",
            "overlap_fraction": "Agreement sample (share of each batch)",
            "gold_fraction": "Gold cells (share of each batch)",
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        from models_zoo import list_models  # torch comes with it: only when the page is drawn

        # A list to choose from; the model field's validator still refuses anything else.
        self.fields["encoder_backbone"].widget = forms.Select(choices=[(n, n) for n in list_models()])
        sources = project_sources(self.instance) if self.instance.pk else []
        self.fields["query_source"].widget = forms.Select(
            choices=[("", "every source"), *[(s, s) for s in sources]]
        )

    def clean_class_weights(self) -> dict[str, float]:
        try:
            return check_class_weights(self.instance, self.cleaned_data["class_weights"] or {})
        except ValueError as error:
            raise forms.ValidationError(str(error)) from error

    def clean_query_source(self) -> str:
        try:
            return check_query_source(self.instance, self.cleaned_data["query_source"])
        except ValueError as error:
            raise forms.ValidationError(str(error)) from error


class MemberAddForm(forms.Form):
    username = forms.CharField(max_length=150)
    role = forms.ChoiceField(choices=Membership.Role.choices, initial=Membership.Role.ANNOTATOR)

    def clean_username(self) -> User:
        name = self.cleaned_data["username"]
        user = User.objects.filter(username=name, is_active=True).first()
        if user is None:
            raise forms.ValidationError(f"no active user {name!r}")
        return user


class MemberChangeForm(forms.Form):
    """One member's row: a new role, ``remove`` (project admins), ``pause`` or ``resume`` their
    labelling (leads and admins)."""

    action = forms.ChoiceField(
        choices=[("role", "Change role"), ("remove", "Remove"), ("pause", "Pause"), ("resume", "Resume")]
    )
    role = forms.ChoiceField(choices=Membership.Role.choices, required=False)

    def clean(self) -> dict[str, object]:
        data = super().clean() or {}
        if data.get("action") == "role" and not data.get("role"):
            raise forms.ValidationError("choose the new role")
        return data


class InviteForm(forms.Form):
    """Invite someone by e-mail. Leads invite up to lead; only admins may invite an admin."""

    email = forms.EmailField(max_length=254)
    role = forms.ChoiceField(choices=Membership.Role.choices, initial=Membership.Role.ANNOTATOR)

    def __init__(self, *args: Any, inviter_role: str = Membership.Role.ADMIN, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if inviter_role != Membership.Role.ADMIN:
            choices = [c for c in Membership.Role.choices if c[0] != Membership.Role.ADMIN]
            self.fields["role"] = forms.ChoiceField(choices=choices, initial=Membership.Role.ANNOTATOR)
