// Built only where the Vulkan headers are installed; see VulkanBackendPlugin.swift.
#if canImport(CVulkan)
import CVulkan
import LoRAFuse

/// Sub-allocates tensor ranges out of a few large buffers, so a graph with thousands of
/// intermediate tensors needs a handful of Vulkan allocations, not thousands.
final class VulkanArena {
    static let maximumBlockSize = 256 << 20

    private let device: VulkanDevice
    private let hostVisible: Bool
    private let blockSize: Int
    private(set) var blocks: [VulkanBuffer] = []
    private var used = 0

    /// `expectedBytes` sizes the blocks (at most 256 MiB each) so small graphs allocate little.
    init(device: VulkanDevice, hostVisible: Bool, expectedBytes: Int) {
        self.device = device
        self.hostVisible = hostVisible
        self.blockSize = min(Self.maximumBlockSize, max(expectedBytes, 1 << 16))
    }

    /// A range of `size` bytes aligned for binding as a storage buffer.
    func allocate(_ size: Int) throws -> VulkanRange {
        let alignment = device.storageAlignment
        let needed = max(4, (size + 3) & ~3)
        if let block = blocks.last {
            let offset = (used + alignment - 1) / alignment * alignment
            if offset + needed <= block.size {
                used = offset + needed
                return VulkanRange(buffer: block, offset: offset, size: needed)
            }
        }
        let block = try VulkanBuffer(device: device, size: max(blockSize, needed), hostVisible: hostVisible)
        blocks.append(block)
        used = needed
        return VulkanRange(buffer: block, offset: 0, size: needed)
    }
}

#endif
