package main

import (
	"os"
	"runtime"

	"github.com/silo-proxy/silo-proxy/spawner"
)

// init dispatches the silo-init re-exec mode before main (and before any
// other goroutine could run): the spawner starts every silo as
// `/proc/self/exe silo-init NAME` in fresh namespaces. Locking the OS
// thread here keeps InitMain on the process's main thread, where the mount
// namespace, capabilities and no_new_privs it sets up stay in force for
// the postmaster it forks.
func init() {
	if len(os.Args) > 1 && os.Args[1] == spawner.InitArg {
		runtime.LockOSThread()
		spawner.InitMain()
	}
}
