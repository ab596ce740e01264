/// A kernel's push constants: a struct of 32-bit scalars (and `VulkanWords<N>` arrays)
/// generated from the shader's SPIR-V into Generated/VulkanKernel.swift, so its fields are
/// the GLSL `Parameters` block's, in its order. A dispatch copies the struct's bytes as they
/// lie in memory; `layoutMatchesSPIRV` checks that Swift laid it out at the SPIR-V offsets.
protocol VulkanPushConstants: Sendable {
    /// The block's members as the SPIR-V declares them.
    static var spirvMembers: [VulkanPushMember] { get }
    /// Where Swift put each member (from key paths), in the same order.
    static var swiftOffsets: [Int?] { get }
}

/// One member of a push-constant block: its GLSL name, byte offset and size in words.
struct VulkanPushMember: Sendable, Equatable {
    var name: String
    var offset: Int
    var words: Int
}

extension VulkanPushConstants {
    /// True when every member sits at its SPIR-V offset and the struct is exactly the block's size.
    static var layoutMatchesSPIRV: Bool {
        let end = spirvMembers.map { $0.offset + 4 * $0.words }.max() ?? 0
        return swiftOffsets == spirvMembers.map(\.offset) && MemoryLayout<Self>.size == end
    }
}

/// The push constants of a kernel whose shader declares none.
struct VulkanNoConstants: VulkanPushConstants {
    static let spirvMembers: [VulkanPushMember] = []
    static var swiftOffsets: [Int?] { [] }
}
