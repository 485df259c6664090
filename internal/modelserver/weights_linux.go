package modelserver

import "syscall"

// adviseHugePages asks for transparent huge pages (THP set to madvise, a
// common default, gives them only to memory that asks), so that filling the
// weights' memory takes a page fault per 2 MiB instead of per 4 KiB.
// Failing is harmless: the memory works the same in small pages.
func adviseHugePages(b []byte) { _ = syscall.Madvise(b, syscall.MADV_HUGEPAGE) }

// sealWeights makes loaded weights read-only, as a mapping of the file is:
// a stray write faults instead of corrupting the model.
func sealWeights(data []byte) error {
	return syscall.Mprotect(data, syscall.PROT_READ)
}
