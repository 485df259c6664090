//go:build !unix

package store

import "os"

// unlock is a no-op where bbolt does not lock with flock; closing the file
// is all there is.
func unlock(*os.File) {}
