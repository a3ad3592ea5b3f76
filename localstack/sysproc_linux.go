//go:build linux

package localstack

import "syscall"

// sysProcAttr puts a child in its own process group and has the kernel kill
// it if the stack dies without stopping it.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
