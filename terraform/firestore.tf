# Firestore (native mode) with the indexes and TTL policies the store
# needs; see `go doc ./shared/store` for the document layout.

resource "google_firestore_database" "default" {
  name                    = "(default)"
  location_id             = var.firestore_location
  type                    = "FIRESTORE_NATIVE"
  deletion_policy         = "ABANDON"
  delete_protection_state = "DELETE_PROTECTION_ENABLED"
  depends_on              = [google_project_service.this]
}

# A repository's last iteration (re-tracking continues the numbering).
resource "google_firestore_index" "jobs_by_repo" {
  database   = google_firestore_database.default.name
  collection = "jobs"
  fields {
    field_path = "repo"
    order      = "ASCENDING"
  }
  fields {
    field_path = "iteration"
    order      = "DESCENDING"
  }
}

# Jobs of one repository, newest first (store.Jobs).
resource "google_firestore_index" "jobs_by_repo_created" {
  database   = google_firestore_database.default.name
  collection = "jobs"
  fields {
    field_path = "repo"
    order      = "ASCENDING"
  }
  fields {
    field_path = "created_at"
    order      = "DESCENDING"
  }
}

# Queued jobs never published (store.UnpublishedJobs, the runners' sweep).
resource "google_firestore_index" "jobs_unpublished" {
  database   = google_firestore_database.default.name
  collection = "jobs"
  fields {
    field_path = "status"
    order      = "ASCENDING"
  }
  fields {
    field_path = "published"
    order      = "ASCENDING"
  }
  fields {
    field_path = "created_at"
    order      = "ASCENDING"
  }
}

# Queued jobs published long ago and never claimed (store.UnclaimedJobs).
resource "google_firestore_index" "jobs_unclaimed" {
  database   = google_firestore_database.default.name
  collection = "jobs"
  fields {
    field_path = "status"
    order      = "ASCENDING"
  }
  fields {
    field_path = "published_at"
    order      = "ASCENDING"
  }
}

# Running jobs whose lease expired (store.ExpiredJobs).
resource "google_firestore_index" "jobs_by_lease" {
  database   = google_firestore_database.default.name
  collection = "jobs"
  fields {
    field_path = "status"
    order      = "ASCENDING"
  }
  fields {
    field_path = "lease_expires"
    order      = "ASCENDING"
  }
}

# One repository's events from a sequence number (a resumed stream).
resource "google_firestore_index" "events_by_repo_seq" {
  database   = google_firestore_database.default.name
  collection = "events"
  fields {
    field_path = "repo"
    order      = "ASCENDING"
  }
  fields {
    field_path = "seq_last"
    order      = "ASCENDING"
  }
}

# One repository's events in order, for the API's scoped streams.
resource "google_firestore_index" "events_by_repo" {
  database   = google_firestore_database.default.name
  collection = "events"
  fields {
    field_path = "repo"
    order      = "ASCENDING"
  }
  fields {
    field_path = "created"
    order      = "ASCENDING"
  }
}

# Delivery ids are remembered for de-duplication for 7 days.
resource "google_firestore_field" "deliveries_ttl" {
  database   = google_firestore_database.default.name
  collection = "deliveries"
  field      = "expire_at"
  ttl_config {}
  index_config {}
}

# Events and jobs expire after var.retention_days (written with expire_at
# by the runner and the webhook); a repository's latest state (states) and
# the repository itself never do.
resource "google_firestore_field" "events_ttl" {
  database   = google_firestore_database.default.name
  collection = "events"
  field      = "expire_at"
  ttl_config {}
  index_config {}
}

resource "google_firestore_field" "jobs_ttl" {
  database   = google_firestore_database.default.name
  collection = "jobs"
  field      = "expire_at"
  ttl_config {}
  index_config {}
}

# Redelivery claims (runner/internal/redeliver) are kept a week.
resource "google_firestore_field" "redeliveries_ttl" {
  database   = google_firestore_database.default.name
  collection = "redeliveries"
  field      = "expire_at"
  ttl_config {}
  index_config {}
}

# Abandoned OAuth sign-ins are deleted a day after they expire.
resource "google_firestore_field" "oauth_states_ttl" {
  database   = google_firestore_database.default.name
  collection = "oauth_states"
  field      = "expire_at"
  ttl_config {}
  index_config {}
}
