// Package store persists kube-git-deploy's records in Cloud Firestore:
// tracked repositories, OAuth tokens, jobs and their leases, the Skaffold
// event stream and the latest Skaffold state of each repository. It maps
// Firestore status codes to the sentinel errors declared here (ErrNotFound,
// ErrAlreadyExists, ...), so callers never look at gRPC codes, and it seals
// webhook secrets and tokens with a secret.Box before they reach Firestore.
//
// # Document layout
//
// The layout is shaped by Firestore's limits: about one sustained write per
// second per document, 1 MiB per document, 500 writes per commit, and
// listeners that fall behind when one watched query receives many writes per
// second. Hot data is therefore never written to a shared document: each job
// owns its job document and its event chunks, and each repository's state is
// rate-limited by JobWriter.
//
//	collection    doc id                  fields                                          written by              how often
//	------------  ----------------------  ----------------------------------------------  ----------------------  ------------------------------
//	repositories  owner~name, lowercase   owner, name (display case), hook_id,            PrivateAPI (track,      on track/untrack/trigger
//	              (GitHub names are case  webhook_secret (sealed), tracked_by,            untrack, triggers,      change; once per job created
//	              insensitive)            tracked_by_caller, tracked_at, policy{…},       policy); CreateJob      (push rate of one repository)
//	                                      triggers{auto_build, auto_deploy, auto_sync},   Execute (control.go)
//	                                      next_iteration, latest_job_id,
//	                                      pending_job_id, pending_deploy_job_id
//	tokens        TokenKey: sha256 of     caller, login, token (sealed), scopes,          OAuth callback          once per sign-in
//	              the caller ~ login,     created_at
//	              lowercase
//	deliveries    GitHub delivery id      job_id, created_at, expire_at (TTL, +7 days)    CreateJob               once per webhook delivery
//	pushes        PushKey (sha256 of      job_id, created_at, expire_at (TTL, +7 days)    CreateJob               once per push
//	              repo, ref, before,
//	              after, pushed_at)
//	jobs          job id (random)         repo, owner, name, ref, sha, before,            CreateJob, runner       create; claim; lease renewal
//	                                      delivery_id, pushed_at, trigger, iteration,     (ClaimJob, RenewLease,  every lease/3; finish
//	                                      status,
//	                                      created_at, started_at, finished_at,            FinishJob)
//	                                      finished_by, lease_owner, lease_expires,        Execute (control.go),
//	                                      attempts, error, force_deploy, deploy_of,       MarkDeployPending
//	                                      images, deploy_pending
//	events        {job id}-{chunk:08d}    repo, job_id, iteration, chunk, created         JobWriter (runner)      one document per chunk of up
//	                                      (server time), v1 [bytes] (v1pb.LogEntry),                              to 100 events, at most one per
//	                                      v2 [bytes] (v2pb.Event)                                                 FlushInterval (250 ms) per job
//	states        repository key          job_id, iteration, v1 (bytes, v1pb.State),      JobWriter (runner)      at most once per StateInterval
//	                                      v2 (bytes, v2pb.State), updated (server                                 (1 s) per running job
//	                                      time), version (write counter)
//
// Sealed fields are secret.Box values whose additional data is the
// document's path and the field name ("repositories/alice~app#webhook_secret"),
// so a sealed value copied into another document does not open there.
//
// Untracking deletes only the repositories document: jobs, events, states and
// deliveries stay, so history remains readable and iterations continue where
// they left off when the repository is tracked again.
//
// # Events
//
// An events document holds a batch of events, not one: a build printing
// 10,000 lines costs about a hundred writes. Its id is deterministic, so an
// append retried by a runner that lost its lease fails with ErrAlreadyExists
// instead of duplicating events. Chunks of one job are written one after the
// other, so their created timestamps increase with chunk. Readers use:
//
//   - the whole stream: events ordered by created (single-field index,
//     automatic);
//   - one repository: events where repo == key ordered by created; this needs
//     the composite index (repo ASC, created ASC);
//   - one job: events where job_id == id, sorted by chunk in memory
//     (single-field index, automatic).
//
// created increases monotonically, which caps the collection at about 500
// writes per second in production (Firestore's sequential index limit); at
// four chunks per second per running job that is far above our load.
//
// # Indexes and policies
//
// Composite indexes the queries of this package (and the API's listeners)
// need in production; the emulator needs none:
//
//	collection  fields                                 used by
//	jobs        repo ASC, iteration DESC               Jobs, TrackRepository (continuing iterations)
//	jobs        status ASC, lease_expires ASC          ExpiredJobs
//	events      repo ASC, created ASC                  listening to one repository's events
//
// TTL policies on deliveries.expire_at and pushes.expire_at remove delivery
// and push records after seven days, which is longer than GitHub ever
// redelivers (a replay older than that is caught by the runner, which
// builds a push only while its ref still points at its commit).
//
// # Leases
//
// Jobs are delivered at least once. A runner calls ClaimJob before working
// on a job; the claim is a lease that it extends with RenewLease and ends
// with FinishJob. A job whose lease expired (the runner died) can be claimed
// by another runner, which continues its events at JobHistory.NextChunk.
// Time is always passed in (the now arguments, WithClock), never read by the
// lease logic itself.
//
// # Transactions
//
// Transactions read at most three documents and write at most four, and never
// span slow work: the Firestore emulator holds pessimistic locks and aborts a
// waiter after about two seconds, and production Firestore aborts on
// contention. Aborted transactions are retried by the Firestore client.
package store
