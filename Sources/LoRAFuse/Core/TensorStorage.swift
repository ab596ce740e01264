import Foundation

/// Immutable bytes that a `HostTensor` views: either memory this object owns, or a range
/// inside something another object keeps alive (a memory-mapped safetensors file).
public final class TensorStorage: @unchecked Sendable {
    public let baseAddress: UnsafeRawPointer
    public let byteCount: Int
    private let owner: AnyObject?
    private let ownsMemory: Bool
    /// Whether the bytes lie in a memory-mapped file (whole pages that stay mapped while the
    /// owner lives), so a device may import the pages around them (VK_EXT_external_memory_host).
    public let isFileMapping: Bool

    /// Allocates `byteCount` bytes (64-byte aligned, zeroed) and lets `fill` write them once.
    public init(byteCount: Int, fill: (UnsafeMutableRawBufferPointer) throws -> Void) rethrows {
        let pointer = UnsafeMutableRawPointer.allocate(byteCount: max(byteCount, 1), alignment: 64)
        pointer.initializeMemory(as: UInt8.self, repeating: 0, count: max(byteCount, 1))
        do {
            try fill(UnsafeMutableRawBufferPointer(start: pointer, count: byteCount))
        } catch {
            pointer.deallocate()
            throw error
        }
        self.baseAddress = UnsafeRawPointer(pointer)
        self.byteCount = byteCount
        self.owner = nil
        self.ownsMemory = true
        self.isFileMapping = false
    }

    /// A view of memory kept alive by `owner` (no copy); `fileMapping` when that memory is a
    /// memory-mapped file.
    public init(borrowing baseAddress: UnsafeRawPointer, byteCount: Int, owner: AnyObject, fileMapping: Bool = false) {
        self.baseAddress = baseAddress
        self.byteCount = byteCount
        self.owner = owner
        self.ownsMemory = false
        self.isFileMapping = fileMapping
    }

    deinit {
        if ownsMemory { UnsafeMutableRawPointer(mutating: baseAddress).deallocate() }
    }
}
