# Sluice configuration used by `make run`. Every key is documented in README.md.

listen "main" {
  address = "127.0.0.1:6432"
  cluster = "main"
}

pool {
  mode            = "transaction"
  max_connections = 20
  borrow_timeout  = "120s"
}

cluster "main" {
  writer = "127.0.0.1:15432" # the PostgreSQL that `make run` starts
}

auth {
  method = "scram-sha-256"
  user "app" {
    password         = "env:SLUICE_APP_PASSWORD"
    backend_user     = "app"
    backend_password = "env:SLUICE_APP_BACKEND_PASSWORD"
  }
}

admin {
  address = "127.0.0.1:9930" # HTTP: /healthz, /readyz, /metrics, /pools, /sessions
}

log {
  level  = "info"
  format = "console"
}
