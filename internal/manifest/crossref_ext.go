package manifest

func (rc *refChecker) hasDataset(string) bool { return false }

func crossReferencesExt(*refChecker, any) {}
