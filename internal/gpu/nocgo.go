//go:build !cgo

package gpu

import "log/slog"

// openAuto is Open("auto") in a binary built without cgo: go-nvml needs cgo, so there is no
// NVML to load and no GPUs unless they are declared.
func openAuto(log *slog.Logger) Inventory {
	log.Info("built without cgo: NVML unavailable: " + declareHint)
	return none{}
}
