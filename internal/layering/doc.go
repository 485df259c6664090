// Package layering holds no code: its test keeps infera's packages in their layers, from
// `go list`. Policies (autoscaler, reconciler, simulate, eviction, and the placement
// policy to come) are pure: neither they nor the infera packages they use import sockets,
// processes or the database. The mechanisms (gateway, supervisor, store) do not import each
// other. Vocabulary packages (workload, clock) import no other infera package. The admin API
// does not import the controller, so the dashboard can build on its views. Only the CLI
// imports the composition root (platform), and only cmd/infera imports the CLI.
package layering
