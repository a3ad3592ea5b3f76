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

# Jobs of one repository, newest first (store.Jobs, re-tracking).
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

# Push identities (store.PushKey) are remembered for de-duplication of
# replayed deliveries for 7 days, like delivery ids.
resource "google_firestore_field" "pushes_ttl" {
  database   = google_firestore_database.default.name
  collection = "pushes"
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
