"""Strings planted in the permission-matrix fixture (tests/api/conftest.py) where only some roles may read
them, and the check both matrices run on every response body: a generic scan, so a new endpoint, page or
field that shows a hidden value fails without a test written for it.

Who may read what (annotation/api/visibility.py enforces it):
- reference labels and attributes of cells, server paths of model files: nobody;
- import paths (``original_name``, which names the hidden reference label for a folder import), patient and
  slide ids, job params and results (server paths, imported file names): leads and admins;
- a job's traceback: admins (and the logs); everyone else reads the first line of its error.
"""

from __future__ import annotations

PATIENT_MARKER = "PATIENTSECRET"  # every cell's patient_id starts with it
SLIDE_MARKER = "SLIDESECRET"  # every cell's slide_id starts with it
PARAMS_PATH = "/srv/PARAMSECRET"  # a server path in the jobs' params
IMPORT_RESULT_MARKER = "RESULTSECRET"  # an imported file's name in the import job's result
TRACEBACK_MARKER = "/srv/leukoloop/TRACESECRET"  # a file in the failed job's traceback
JOB_ERROR_SUMMARY = "RuntimeError: the retrain failed"  # the first line of its error: everyone may read it
CELL_MARKER = "SECRETCELL"  # in every cell's original_name
REFERENCE_MARKER = "REFSECRET"  # in every cell's reference_attributes
ARTIFACT_PATH = "/srv/secret-artifacts/clf.joblib"  # a model file's server path

NOBODY = (REFERENCE_MARKER, ARTIFACT_PATH)
LEADS_ONLY = (CELL_MARKER, PATIENT_MARKER, SLIDE_MARKER, PARAMS_PATH, IMPORT_RESULT_MARKER)
ADMINS_ONLY = (TRACEBACK_MARKER, "Traceback (most recent call last)")

HIDDEN_FROM: dict[str | None, tuple[str, ...]] = {
    "annotator": NOBODY + LEADS_ONLY + ADMINS_ONLY,
    "reviewer": NOBODY + LEADS_ONLY + ADMINS_ONLY,
    "lead": NOBODY + ADMINS_ONLY,
    "admin": NOBODY,
    "superuser": NOBODY,
    "outsider": NOBODY + LEADS_ONLY + ADMINS_ONLY,
    None: NOBODY + LEADS_ONLY + ADMINS_ONLY,  # anonymous
}


def assert_nothing_hidden(role: str | None, text: str, where: str) -> None:
    """No string hidden from ``role`` appears in ``text`` (a response body)."""
    leaked = [secret for secret in HIDDEN_FROM[role] if secret in text]
    assert not leaked, f"{role} reads {leaked} at {where}: {text[:800]}"
