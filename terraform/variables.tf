variable "project_id" {
  description = "Google Cloud project to deploy into."
  type        = string
}

variable "region" {
  description = "Region of the functions, the Pub/Sub and Firestore location's region."
  type        = string
  default     = "us-central1"
}

variable "firestore_location" {
  description = "Firestore location (a region or multi-region such as nam5)."
  type        = string
  default     = "nam5"
}

variable "functions_source" {
  description = "Path of the Cloud Functions source bundle (make functions-bundle writes dist/functions.zip)."
  type        = string
  default     = "../dist/functions.zip"
}

variable "go_runtime" {
  description = "Cloud Functions Go runtime; must be at least the go directive of go.mod."
  type        = string
  default     = "go126"
}

variable "github_client_id" {
  description = "GitHub OAuth App client id."
  type        = string
}

variable "secrets_ready" {
  description = <<-EOT
    Whether the Secret Manager secrets kgd-github-client-secret and
    kgd-encryption-key have a version. Terraform only creates the secret
    containers (and their IAM), so no secret value ever passes through
    terraform variables or state; the functions, the API service and the
    runner group read the latest version when they start and cannot be
    created before one exists. Bootstrap with two applies:
      1. terraform apply (secrets_ready = false: secrets, queue, Firestore,
         service accounts, repositories, runner template; no functions,
         API service or runner group);
      2. gcloud secrets versions add kgd-github-client-secret --data-file=-
         openssl rand -base64 32 | gcloud secrets versions add kgd-encryption-key --data-file=-
      3. terraform apply -var secrets_ready=true.
    Deployments made before the secrets moved out of terraform variables
    already have versions (this configuration forgets, never destroys, them):
    set it to true right away, or the apply destroys the functions and the
    API service.
  EOT
  type        = bool
  default     = false
}

variable "github_api_url" {
  description = "GitHub REST API base URL (GitHub Enterprise Server: https://HOST/api/v3/)."
  type        = string
  default     = "https://api.github.com/"
}

variable "github_web_url" {
  description = "GitHub web base URL."
  type        = string
  default     = "https://github.com/"
}

variable "github_private_repos" {
  description = "Request the repo OAuth scope, needed to clone private repositories."
  type        = bool
  default     = false
}

variable "public_url" {
  description = "Base URL of PublicAPI: GitHub delivers webhooks to it and the browser returns to its OAuth callback (output oauth_callback_url). Empty: the function's cloudfunctions.net URL."
  type        = string
  default     = ""
}

variable "private_url" {
  description = "Base URL users reach PrivateAPI at (its PRIVATE_HTTP_HOST). Empty: the function's cloudfunctions.net URL. The OAuth callback is served by PublicAPI (see public_url)."
  type        = string
  default     = ""
}

variable "private_invokers" {
  description = "Principals allowed to call PrivateAPI (e.g. user:alice@example.com, group:deployers@example.com)."
  type        = list(string)
  default     = []
}

variable "max_delivery_attempts" {
  description = "Deliveries of a job message before it moves to the dead-letter topic (5 to 100)."
  type        = number
  default     = 5

  validation {
    condition     = var.max_delivery_attempts >= 5 && var.max_delivery_attempts <= 100
    error_message = "max_delivery_attempts must be between 5 and 100."
  }
}

variable "api_image" {
  description = "Container image of the API service (api/Dockerfile). Empty: the service is not created."
  type        = string
  default     = ""
}

variable "api_invokers" {
  description = "Principals allowed to call the API service (Cloud Run IAM); nobody else can."
  type        = list(string)
  default     = []
}

variable "retention_days" {
  description = "Days events and jobs are kept before Firestore's TTL policies delete them (the latest state of every repository is kept); 0 keeps them forever."
  type        = number
  default     = 30

  validation {
    condition     = var.retention_days >= 0 && floor(var.retention_days) == var.retention_days
    error_message = "retention_days must be a whole number, at least 0."
  }
}

variable "api_operators" {
  description = "Google accounts (emails) that may steer every repository through the API (Execute, Auto*, Handle); each repository's deploy policy can name more. Everyone else in api_invokers only watches."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for e in var.api_operators : can(regex("^[^@,\\s]+@[^@,\\s]+$", e))])
    error_message = "api_operators must be email addresses (without user:/group: prefixes)."
  }
}

variable "api_max_instances" {
  description = "Most instances of the API service. Each keeps one Firestore listener per watched scope."
  type        = number
  default     = 5
}

# The runner (runner.tf).

variable "runner_image" {
  description = "Container image of the runner (runner/Dockerfile), e.g. REGION-docker.pkg.dev/PROJECT/kgd/runner:TAG. Empty: no runner is created (nothing builds or deploys)."
  type        = string
  default     = ""

  validation {
    condition     = can(regex("^[^\\s'\"]*$", var.runner_image))
    error_message = "runner_image must be an image reference without spaces or quotes."
  }
}

variable "runner_machine_type" {
  description = "Machine type of the runner VMs; docker builds run on them."
  type        = string
  default     = "e2-standard-2"
}

variable "runner_disk_size_gb" {
  description = "Boot disk of each runner VM in GB (docker images and build cache)."
  type        = number
  default     = 50

  validation {
    condition     = var.runner_disk_size_gb >= 20
    error_message = "runner_disk_size_gb must be at least 20."
  }
}

variable "runner_min_replicas" {
  description = "Fewest runner VMs. 0 lets the group scale to zero when no job waits (the first job then waits for a VM to boot, about a minute)."
  type        = number
  default     = 1

  validation {
    condition     = var.runner_min_replicas >= 0 && floor(var.runner_min_replicas) == var.runner_min_replicas
    error_message = "runner_min_replicas must be a whole number, at least 0."
  }
}

variable "runner_max_replicas" {
  description = "Most runner VMs (at least runner_min_replicas)."
  type        = number
  default     = 4

  validation {
    condition     = var.runner_max_replicas >= 1 && floor(var.runner_max_replicas) == var.runner_max_replicas
    error_message = "runner_max_replicas must be a whole number, at least 1."
  }
}

variable "runner_jobs_per_instance" {
  description = "Jobs one runner VM runs at once (its KGD_RUNNER_CONCURRENCY); the autoscaler aims at one VM per this many waiting or running jobs."
  type        = number
  default     = 1

  validation {
    condition     = var.runner_jobs_per_instance >= 1 && floor(var.runner_jobs_per_instance) == var.runner_jobs_per_instance
    error_message = "runner_jobs_per_instance must be a whole number, at least 1."
  }
}

variable "runner_network" {
  description = "VPC network of the runner VMs."
  type        = string
  default     = "default"
}

variable "runner_subnetwork" {
  description = "Subnetwork of the runner VMs (required for custom-mode networks). Empty: the network's subnetwork in the region."
  type        = string
  default     = ""
}

variable "runner_external_ip" {
  description = "Give each runner VM an ephemeral public IP for egress (GitHub, base images, the cluster). false: the VMs have only internal addresses, and the subnetwork needs Cloud NAT (and Private Google Access) for them to reach anything — this configuration creates neither."
  type        = bool
  default     = true
}

variable "runner_zones" {
  description = "Zones of the region the runner group spreads over. Empty: chosen by Compute Engine."
  type        = list(string)
  default     = []

  validation {
    condition     = length(var.runner_zones) <= 4
    error_message = "runner_zones lists at most the 4 zones of a region."
  }
}

variable "gke_cluster_name" {
  description = "Name of an existing GKE cluster in this project the runner deploys to, with its own Google identity (roles/container.clusterViewer; grant Kubernetes RBAC to the runner_service_account output). Set this or kubeconfig_secret when runner_image is set."
  type        = string
  default     = ""
}

variable "gke_cluster_location" {
  description = "Location (region or zone) of gke_cluster_name. Empty: region."
  type        = string
  default     = ""
}

variable "kubeconfig_secret" {
  description = "Id (or projects/P/secrets/S name) of an existing Secret Manager secret whose latest version is a kubeconfig for the cluster to deploy to, for clusters other than GKE; the runner may read only this secret and the encryption key. Set this or gke_cluster_name when runner_image is set."
  type        = string
  default     = ""

  validation {
    condition     = can(regex("^((projects/[a-z0-9-]+/secrets/)?[A-Za-z0-9_-]+)?$", var.kubeconfig_secret))
    error_message = "kubeconfig_secret must be a secret id or projects/PROJECT/secrets/ID (no /versions/...)."
  }
}

variable "apps_repository_readers" {
  description = "Principals that may pull deployed applications' images from the kgd-apps repository, e.g. the GKE nodes' service account (serviceAccount:...)."
  type        = list(string)
  default     = []
}

variable "event_webhook_url" {
  description = "An https:// endpoint of yours that receives every job event as HMAC-signed seed-002 envelopes (the runner's webhook sink, docs/exports.md); empty: none. Requires event_webhook_key_secret."
  type        = string
  default     = ""

  validation {
    condition     = var.event_webhook_url == "" || can(regex("^https://[^/@\\s]+(/\\S*)?$", var.event_webhook_url))
    error_message = "event_webhook_url must be an https:// URL without user info."
  }
}

variable "event_webhook_key_secret" {
  description = "Id (or projects/P/secrets/S name) of an existing Secret Manager secret whose latest version is the webhook sink's HMAC key (at least 16 bytes); the runner may read it."
  type        = string
  default     = ""

  validation {
    condition     = can(regex("^((projects/[a-z0-9-]+/secrets/)?[A-Za-z0-9_-]+)?$", var.event_webhook_key_secret))
    error_message = "event_webhook_key_secret must be a secret id or projects/PROJECT/secrets/ID (no /versions/...)."
  }
}

variable "event_grpc_target" {
  description = "host:port of a kgd.sink.v1.EventSink service of yours that receives every job's Skaffold v2 events over TLS (the runner's gRPC sink, docs/exports.md); empty: none."
  type        = string
  default     = ""

  validation {
    condition     = var.event_grpc_target == "" || can(regex("^[A-Za-z0-9.-]+:[0-9]{1,5}$", var.event_grpc_target))
    error_message = "event_grpc_target must be host:port."
  }
}

variable "event_grpc_token_secret" {
  description = "Id (or projects/P/secrets/S name) of an existing Secret Manager secret whose latest version is a bearer token the gRPC sink sends; empty: none."
  type        = string
  default     = ""

  validation {
    condition     = can(regex("^((projects/[a-z0-9-]+/secrets/)?[A-Za-z0-9_-]+)?$", var.event_grpc_token_secret))
    error_message = "event_grpc_token_secret must be a secret id or projects/PROJECT/secrets/ID (no /versions/...)."
  }
}
