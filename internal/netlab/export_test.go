package netlab

// KernelDrops is kernelDrops, for the tests.
var KernelDrops = kernelDrops
