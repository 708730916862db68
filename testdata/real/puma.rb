# puma cluster mode as deployed: two workers; with queue_requests off a
# worker accepts only when it has a thread free, and its reactor holds no
# half-read requests to drop at shutdown.
workers 2
threads 1, 4
queue_requests false
worker_shutdown_timeout 10
