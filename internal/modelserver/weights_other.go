//go:build !linux

package modelserver

// adviseHugePages does nothing: huge-page advice is Linux's.
func adviseHugePages([]byte) {}

// sealWeights does nothing where syscall has no Mprotect.
func sealWeights([]byte) error { return nil }
