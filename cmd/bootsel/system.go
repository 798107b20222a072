package main

import (
	"os"

	"github.com/updog/updog/internal/dm"
	"github.com/updog/updog/internal/initramfs"
	"github.com/updog/updog/internal/kexec"
)

// realSystem is the running kernel.
type realSystem struct{}

func (realSystem) mountRO(source, target, fstype string) error {
	return initramfs.Mount(source, target, fstype, initramfs.MountOptions{ReadOnly: true, Inert: true})
}

func (realSystem) unmount(target string) error { return initramfs.Unmount(target) }

func (realSystem) kexecLoad(kernel, initrd *os.File, cmdline string) error {
	return kexec.Load(kernel, initrd, cmdline)
}

func (realSystem) kexecExec() error { return kexec.Exec() }

func (realSystem) createDM(d dm.Device) (uint32, uint32, error) {
	c, err := dm.Open("")
	if err != nil {
		return 0, 0, err
	}
	defer c.Close()
	return c.Create(d)
}

func (realSystem) mountRoot(source, target, fstype string, readOnly bool, data string) error {
	return initramfs.Mount(source, target, fstype, initramfs.MountOptions{ReadOnly: readOnly, Data: data})
}
