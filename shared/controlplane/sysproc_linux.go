//go:build linux

package controlplane

import "syscall"

// sysProcAttr puts a child in its own process group and has the kernel kill
// it if this process dies without calling Stop.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
