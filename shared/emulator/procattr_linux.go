package emulator

import "syscall"

// procAttr puts the emulator in its own process group, so Stop can kill the
// JVM and anything it spawned, and asks the kernel to kill it if this
// process dies first.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
