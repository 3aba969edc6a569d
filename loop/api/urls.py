from django.urls import path

from loop.api import taxonomy, views

urlpatterns = [
    path("projects/<int:project_id>/batches/", views.BatchListApi.as_view(), name="api-batch-list"),
    path(
        "projects/<int:project_id>/batches/<int:batch_id>/",
        views.BatchDetailApi.as_view(),
        name="api-batch-detail",
    ),
    path("projects/<int:project_id>/models/", views.ModelVersionListApi.as_view(), name="api-model-list"),
    path(
        "projects/<int:project_id>/models/<int:version_id>/",
        views.ModelVersionDetailApi.as_view(),
        name="api-model-detail",
    ),
    # The active-learning loop and the labelling page
    path("projects/<int:project_id>/loop/", views.LoopStateApi.as_view(), name="api-loop"),
    path("projects/<int:project_id>/loop/start/", views.LoopStartApi.as_view(), name="api-loop-start"),
    path(
        "projects/<int:project_id>/loop/finetune/", views.LoopFinetuneApi.as_view(), name="api-loop-finetune"
    ),
    path(
        "projects/<int:project_id>/batches/current/",
        views.CurrentBatchApi.as_view(),
        name="api-batch-current",
    ),
    path(
        "projects/<int:project_id>/batches/<int:batch_id>/submit/",
        views.BatchSubmitApi.as_view(),
        name="api-batch-submit",
    ),
    path(
        "projects/<int:project_id>/batches/<int:batch_id>/skip/",
        views.BatchSkipApi.as_view(),
        name="api-batch-skip",
    ),
    path(
        "projects/<int:project_id>/batches/<int:batch_id>/unskip/",
        views.BatchUnskipApi.as_view(),
        name="api-batch-unskip",
    ),
    path("cells/<int:cell_id>/why/", views.CellWhyApi.as_view(), name="api-cell-why"),
    path("cells/<int:cell_id>/similar/", views.CellSimilarApi.as_view(), name="api-cell-similar"),
    # The taxonomy: members read the classes; leads change them (a change queues a retrain)
    path("projects/<int:project_id>/classes/", taxonomy.ClassListApi.as_view(), name="api-class-list"),
    path(
        "projects/<int:project_id>/classes/<slug:name>/",
        taxonomy.ClassDetailApi.as_view(),
        name="api-class-detail",
    ),
    path(
        "projects/<int:project_id>/classes/<slug:name>/merge/",
        taxonomy.ClassMergeApi.as_view(),
        name="api-class-merge",
    ),
    path(
        "projects/<int:project_id>/classes/<slug:name>/retire/",
        taxonomy.ClassRetireApi.as_view(),
        name="api-class-retire",
    ),
    path(
        "projects/<int:project_id>/classes/<slug:name>/restore/",
        taxonomy.ClassRestoreApi.as_view(),
        name="api-class-restore",
    ),
    path(
        "projects/<int:project_id>/taxonomy/presets/",
        taxonomy.TaxonomyPresetsApi.as_view(),
        name="api-taxonomy-presets",
    ),
    path(
        "projects/<int:project_id>/taxonomy/history/",
        taxonomy.TaxonomyHistoryApi.as_view(),
        name="api-taxonomy-history",
    ),
]
