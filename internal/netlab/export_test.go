package netlab

// KernelDrops is kernelDrops, for the tests.
var KernelDrops = kernelDrops

// WANQueueBytes is wanQueueBytes, for the tests.
const WANQueueBytes = wanQueueBytes
