# The job queue: pushes become messages on kgd-jobs; the runner pulls them
# from kgd-runner; a message delivered max_delivery_attempts times moves
# to kgd-jobs-dead, whose subscription keeps it for inspection.

resource "google_pubsub_topic" "jobs" {
  name                       = "kgd-jobs"
  message_retention_duration = "86400s"
  depends_on                 = [google_project_service.this]
}

resource "google_pubsub_topic" "dead" {
  name       = "kgd-jobs-dead"
  depends_on = [google_project_service.this]
}

resource "google_pubsub_subscription" "dead" {
  name                       = "kgd-jobs-dead-sub"
  topic                      = google_pubsub_topic.dead.id
  message_retention_duration = "604800s"
  ack_deadline_seconds       = 60
  expiration_policy {
    ttl = ""
  }
}

resource "google_pubsub_subscription" "runner" {
  name                 = "kgd-runner"
  topic                = google_pubsub_topic.jobs.id
  ack_deadline_seconds = 60

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead.id
    max_delivery_attempts = var.max_delivery_attempts
  }
  retry_policy {
    minimum_backoff = "10s"
    maximum_backoff = "600s"
  }
  expiration_policy {
    ttl = ""
  }
}

# Pub/Sub's service agent forwards dead letters: it must publish to the
# dead-letter topic and acknowledge on the source subscription.
resource "google_pubsub_topic_iam_member" "dead_publisher" {
  topic  = google_pubsub_topic.dead.id
  role   = "roles/pubsub.publisher"
  member = local.pubsub_agent
}

resource "google_pubsub_subscription_iam_member" "dead_subscriber" {
  subscription = google_pubsub_subscription.runner.id
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_agent
}

# The events topic: the runner publishes every job event once it is stored
# (ordering key: the job id; attributes repository, job_id, sequence,
# schema, kind), for Cloud Functions, BigQuery subscriptions or chat bots,
# like Cloud Build's cloud-builds topic. Subscribers bring their own
# subscription (enable_message_ordering = true to get each job's events in
# order); without one, messages are dropped. Kept a day for a
# subscription's seek.
resource "google_pubsub_topic" "events" {
  name                       = "kgd-events"
  message_retention_duration = "86400s"
  depends_on                 = [google_project_service.this]
}
