# The runner: a regional managed instance group of Container-Optimized OS
# VMs, each running the runner image under systemd (cloud-init, see
# runner/cloud-init.yaml.tftpl). It pulls jobs from the kgd-runner
# subscription, builds with the VM's docker, pushes to the kgd-apps
# repository and deploys with helm. The group is autoscaled on the
# subscription's backlog (one VM per runner_jobs_per_instance undelivered
# or unacknowledged jobs) and auto-healed on the runner's /healthz.
#
# Created when runner_image is set; the group itself (which starts VMs that
# read the encryption key) also needs secrets_ready.

locals {
  runner            = var.runner_image != ""
  runner_group      = local.runner && var.secrets_ready
  runner_tag        = "kgd-runner"
  runner_health     = 8080
  gke               = var.gke_cluster_name != ""
  gke_location      = var.gke_cluster_location != "" ? var.gke_cluster_location : var.region
  gke_cluster       = one(data.google_container_cluster.target)
  kubeconfig        = var.kubeconfig_secret != ""
  kubeconfig_secret = startswith(var.kubeconfig_secret, "projects/") ? var.kubeconfig_secret : "projects/${var.project_id}/secrets/${var.kubeconfig_secret}"

  # The operator's event sinks (docs/exports.md): their keys are read from
  # Secret Manager by the runner, never written into its environment.
  sink_secrets = {
    for k, v in { webhook_key = var.event_webhook_key_secret, grpc_token = var.event_grpc_token_secret } :
    k => startswith(v, "projects/") ? v : "projects/${var.project_id}/secrets/${v}" if v != ""
  }

  # Regional groups accept a fixed surge of 0 or at least the number of
  # zones they span; no region has more than 4, so 4 is valid wherever
  # Compute Engine puts the VMs. Updates replace VMs 4 at a time, never
  # removing one before its replacement runs (max_unavailable 0).
  runner_max_surge = max(4, length(var.runner_zones))

  # The runner's environment (docker --env-file: VAR=value, no quotes).
  # Secrets are passed by Secret Manager resource name; the runner reads
  # them with its service account.
  runner_env = merge(
    {
      GOOGLE_CLOUD_PROJECT      = var.project_id
      KGD_ENCRYPTION_KEY_SECRET = "projects/${var.project_id}/secrets/${google_secret_manager_secret.encryption_key.secret_id}/versions/latest"
      KGD_JOBS_SUBSCRIPTION     = google_pubsub_subscription.runner.name
      KGD_JOBS_TOPIC            = google_pubsub_topic.jobs.name
      GITHUB_WEB_URL            = var.github_web_url
      GITHUB_API_URL            = var.github_api_url
      KGD_RUNNER_CONCURRENCY    = tostring(var.runner_jobs_per_instance)
      KGD_HEALTH_PORT           = tostring(local.runner_health)
      KGD_LISTEN_HOST           = "0.0.0.0"
      KGD_WORKDIR               = "/tmp"
      KGD_RETENTION             = "${var.retention_days * 24}h"
      KGD_EVENTS_TOPIC          = google_pubsub_topic.events.name
    },
    # Links to jobs in GitHub commit statuses and Deployments.
    local.api_enabled ? { KGD_API_URL = google_cloud_run_v2_service.api[0].uri } : {},
    # GKE: the runner authenticates with its own Google identity.
    local.gke_cluster == null ? {} : {
      KGD_KUBE_ENDPOINT = "https://${local.gke_cluster.endpoint}"
      KGD_KUBE_CA_DATA  = local.gke_cluster.master_auth[0].cluster_ca_certificate
    },
    local.kubeconfig ? { KGD_KUBECONFIG_SECRET = "${local.kubeconfig_secret}/versions/latest" } : {},
    # Without a key the instance template's precondition stops the plan.
    var.event_webhook_url == "" || var.event_webhook_key_secret == "" ? {} : {
      KGD_SINK_WEBHOOK_URL        = var.event_webhook_url
      KGD_SINK_WEBHOOK_KEY_SECRET = "${local.sink_secrets["webhook_key"]}/versions/latest"
    },
    var.event_grpc_target == "" ? {} : { KGD_SINK_GRPC_TARGET = var.event_grpc_target },
    var.event_grpc_target != "" && var.event_grpc_token_secret != "" ? { KGD_SINK_GRPC_TOKEN_SECRET = "${local.sink_secrets["grpc_token"]}/versions/latest" } : {},
  )
  runner_env_file = join("", [for k, v in local.runner_env : "${k}=${v}\n"])

  runner_user_data = templatefile("${path.module}/runner/cloud-init.yaml.tftpl", {
    firewall_script = file("${path.module}/runner/build-firewall.sh")
    runner_env      = local.runner_env_file
    region          = var.region
    runner_image    = var.runner_image
    health_port     = local.runner_health
  })
}

# The GKE cluster to deploy to: its endpoint and CA go to the runner.
data "google_container_cluster" "target" {
  count    = local.runner && local.gke ? 1 : 0
  name     = var.gke_cluster_name
  location = local.gke_location
}

resource "google_service_account" "runner" {
  count        = local.runner ? 1 : 0
  account_id   = "kgd-runner"
  display_name = "kube-git-deploy runner"
}

# Project roles: Firestore (jobs, events, state), the COS logging and
# monitoring agents, and with GKE container.clusters.get, which is all it
# takes to authenticate to a cluster (what it may do inside is Kubernetes
# RBAC bound to the service account's email).
resource "google_project_iam_member" "runner" {
  for_each = local.runner ? setunion(
    ["roles/datastore.user", "roles/logging.logWriter", "roles/monitoring.metricWriter"],
    local.gke ? ["roles/container.clusterViewer"] : [],
  ) : toset([])
  project = var.project_id
  role    = each.value
  member  = google_service_account.runner[0].member
}

resource "google_pubsub_subscription_iam_member" "runner" {
  count        = local.runner ? 1 : 0
  subscription = google_pubsub_subscription.runner.id
  role         = "roles/pubsub.subscriber"
  member       = google_service_account.runner[0].member
}

# The runner puts jobs whose runner died back on the queue.
resource "google_pubsub_topic_iam_member" "runner_publish" {
  count  = local.runner ? 1 : 0
  topic  = google_pubsub_topic.jobs.id
  role   = "roles/pubsub.publisher"
  member = google_service_account.runner[0].member
}

# The runner publishes every stored event to kgd-events.
resource "google_pubsub_topic_iam_member" "runner_events" {
  count  = local.runner ? 1 : 0
  topic  = google_pubsub_topic.events.id
  role   = "roles/pubsub.publisher"
  member = google_service_account.runner[0].member
}

resource "google_secret_manager_secret_iam_member" "runner" {
  for_each = local.runner ? merge(
    { encryption_key = google_secret_manager_secret.encryption_key.id },
    local.kubeconfig ? { kubeconfig = local.kubeconfig_secret } : {},
    local.sink_secrets,
  ) : {}
  secret_id = each.value
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.runner[0].member
}

# Deployed applications' images. The runner pushes here and only here: the
# service images in kgd (its own among them) it may only pull, so a tracked
# repository's build can never replace the runner.
resource "google_artifact_registry_repository" "apps" {
  count         = local.runner ? 1 : 0
  location      = var.region
  repository_id = "kgd-apps"
  format        = "DOCKER"
  description   = "kube-git-deploy: images of deployed applications"
  depends_on    = [google_project_service.this]
}

resource "google_artifact_registry_repository_iam_member" "runner_apps" {
  count      = local.runner ? 1 : 0
  location   = google_artifact_registry_repository.apps[0].location
  repository = google_artifact_registry_repository.apps[0].repository_id
  role       = "roles/artifactregistry.writer"
  member     = google_service_account.runner[0].member
}

resource "google_artifact_registry_repository_iam_member" "apps_readers" {
  for_each   = local.runner ? toset(var.apps_repository_readers) : toset([])
  location   = google_artifact_registry_repository.apps[0].location
  repository = google_artifact_registry_repository.apps[0].repository_id
  role       = "roles/artifactregistry.reader"
  member     = each.value
}

resource "google_artifact_registry_repository_iam_member" "runner_images" {
  count      = local.runner ? 1 : 0
  location   = google_artifact_registry_repository.images.location
  repository = google_artifact_registry_repository.images.repository_id
  role       = "roles/artifactregistry.reader"
  member     = google_service_account.runner[0].member
}

resource "google_compute_region_instance_template" "runner" {
  count        = local.runner ? 1 : 0
  name_prefix  = "kgd-runner-"
  region       = var.region
  machine_type = var.runner_machine_type
  tags         = [local.runner_tag]
  labels       = { app = "kube-git-deploy", component = "runner" }

  disk {
    source_image = "cos-cloud/cos-stable"
    boot         = true
    auto_delete  = true
    disk_type    = "pd-balanced"
    disk_size_gb = var.runner_disk_size_gb
  }

  network_interface {
    network    = var.runner_network
    subnetwork = var.runner_subnetwork != "" ? var.runner_subnetwork : null
    dynamic "access_config" {
      for_each = var.runner_external_ip ? [1] : []
      content {}
    }
  }

  service_account {
    email  = google_service_account.runner[0].email
    scopes = ["cloud-platform"]
  }

  shielded_instance_config {
    enable_secure_boot          = true
    enable_vtpm                 = true
    enable_integrity_monitoring = true
  }

  metadata = {
    user-data              = local.runner_user_data
    google-logging-enabled = "true"
    block-project-ssh-keys = "true"
  }

  lifecycle {
    create_before_destroy = true
    precondition {
      condition     = local.gke != local.kubeconfig
      error_message = "With runner_image set, set exactly one of gke_cluster_name (a GKE cluster in this project) and kubeconfig_secret (a Secret Manager secret holding a kubeconfig): the runner needs one cluster to deploy to."
    }
    # Checked here rather than on the autoscaler so that it fails already
    # while secrets_ready is false.
    precondition {
      condition     = var.runner_min_replicas <= var.runner_max_replicas
      error_message = "runner_min_replicas must not exceed runner_max_replicas."
    }
    precondition {
      condition     = (var.event_webhook_url == "") == (var.event_webhook_key_secret == "")
      error_message = "Set event_webhook_url and event_webhook_key_secret together: the webhook sink signs every delivery."
    }
  }
  depends_on = [google_project_service.this]
}

resource "google_compute_health_check" "runner" {
  count               = local.runner ? 1 : 0
  name                = "kgd-runner"
  check_interval_sec  = 10
  timeout_sec         = 5
  healthy_threshold   = 2
  unhealthy_threshold = 3
  http_health_check {
    port         = local.runner_health
    request_path = "/healthz"
  }
  depends_on = [google_project_service.this]
}

# Google's health checkers reach the runner's health port (the VM's own
# iptables INPUT rule is in build-firewall.sh).
resource "google_compute_firewall" "runner_health" {
  count         = local.runner ? 1 : 0
  name          = "kgd-runner-health-check"
  network       = var.runner_network
  direction     = "INGRESS"
  source_ranges = ["130.211.0.0/22", "35.191.0.0/16"]
  target_tags   = [local.runner_tag]
  allow {
    protocol = "tcp"
    ports    = [tostring(local.runner_health)]
  }
  depends_on = [google_project_service.this]
}

resource "google_compute_region_instance_group_manager" "runner" {
  count                     = local.runner_group ? 1 : 0
  name                      = "kgd-runner"
  base_instance_name        = "kgd-runner"
  region                    = var.region
  distribution_policy_zones = length(var.runner_zones) > 0 ? var.runner_zones : null
  # No target_size: the autoscaler sizes the group.

  version {
    name              = "runner"
    instance_template = google_compute_region_instance_template.runner[0].self_link
  }

  # A runner that stops answering /healthz is recreated; 300 s covers boot,
  # the image pull and the runner's start.
  auto_healing_policies {
    health_check      = google_compute_health_check.runner[0].id
    initial_delay_sec = 300
  }

  # A new template (image, settings) replaces every VM, surging new ones
  # first. A replaced runner gets SIGTERM and hands its job back.
  update_policy {
    type                         = "PROACTIVE"
    instance_redistribution_type = "PROACTIVE"
    minimal_action               = "REPLACE"
    max_surge_fixed              = local.runner_max_surge
    max_unavailable_fixed        = 0
  }

  wait_for_instances = false
}

# One VM per runner_jobs_per_instance jobs in the subscription's backlog.
# num_undelivered_messages counts the jobs waiting and the jobs running
# (unacknowledged), so a busy runner is not scaled in under its job.
resource "google_compute_region_autoscaler" "runner" {
  count  = local.runner_group ? 1 : 0
  name   = "kgd-runner"
  region = var.region
  target = google_compute_region_instance_group_manager.runner[0].id

  autoscaling_policy {
    min_replicas    = var.runner_min_replicas
    max_replicas    = var.runner_max_replicas
    cooldown_period = 180
    mode            = "ON"

    metric {
      name                       = "pubsub.googleapis.com/subscription/num_undelivered_messages"
      filter                     = "resource.type = pubsub_subscription AND resource.labels.subscription_id = \"${google_pubsub_subscription.runner.name}\""
      single_instance_assignment = var.runner_jobs_per_instance
    }

    # Scale in slowly: at most one VM per 10 minutes.
    scale_in_control {
      max_scaled_in_replicas {
        fixed = 1
      }
      time_window_sec = 600
    }
  }
}
