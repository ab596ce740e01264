/// What a compute shader's SPIR-V says about its interface: the push-constant block
/// (member names, offsets, scalar types, array lengths), the descriptor bindings of set 0
/// and their kinds, the specialization constant ids and the literal workgroup size.
///
/// Used by `vulkan-shaders-gen` to generate the Swift side of each kernel from the
/// compiled shader (so push-constant structs cannot drift from the GLSL) and by the tests
/// to check the shipped SPIR-V against the generated Swift. Only the instructions these
/// facts need are read (SPIR-V 1.x physical layout, little-endian words).
public struct SPIRVModule: Sendable {
    public enum Scalar: String, Sendable, Hashable { case uint32, int32, float32 }

    /// One member of the push-constant block; `count` > 1 for an array of scalars.
    public struct Member: Sendable, Hashable {
        public var name: String
        public var offset: Int
        public var scalar: Scalar
        public var count: Int
        public init(name: String, offset: Int, scalar: Scalar, count: Int) {
            self.name = name
            self.offset = offset
            self.scalar = scalar
            self.count = count
        }
        public var size: Int { 4 * count }
    }

    public enum BindingKind: String, Sendable, Equatable { case storageBuffer, uniformTexelBuffer, other }

    public struct ReflectionError: Error, CustomStringConvertible {
        public var description: String
    }

    /// Members of the push-constant block in offset order (empty when the shader has none).
    public private(set) var pushConstants: [Member] = []
    /// Bytes of the push-constant block: the end of its last member.
    public var pushConstantSize: Int { pushConstants.map { $0.offset + $0.size }.max() ?? 0 }
    /// Descriptor set 0: binding number → kind.
    public private(set) var bindings: [Int: BindingKind] = [:]
    /// `constant_id`s of the specialization constants, ascending.
    public private(set) var specializationIDs: [Int] = []
    /// `local_size_x/y/z` when given as literals.
    public private(set) var localSize: [Int]?

    public init(words: [UInt32]) throws {
        guard words.count >= 5, words[0] == 0x0723_0203 else { throw ReflectionError(description: "not a SPIR-V module (magic number)") }
        var memberNames: [UInt32: [Int: String]] = [:]
        var decorations: [UInt32: [UInt32: [UInt32]]] = [:]  // id → decoration → operands
        var memberOffsets: [UInt32: [Int: Int]] = [:]
        var scalars: [UInt32: Scalar] = [:]
        var arrays: [UInt32: (element: UInt32, lengthID: UInt32)] = [:]
        var structs: [UInt32: [UInt32]] = [:]
        var pointers: [UInt32: (storage: UInt32, pointee: UInt32)] = [:]
        var images: [UInt32: UInt32] = [:]  // image type → Dim
        var sampledImages: [UInt32: UInt32] = [:]  // sampled image type → image type
        var constants: [UInt32: UInt32] = [:]
        var variables: [(type: UInt32, id: UInt32, storage: UInt32)] = []
        var specConstants: Set<UInt32> = []

        var index = 5
        while index < words.count {
            let count = Int(words[index] >> 16), opcode = words[index] & 0xFFFF
            guard count > 0, index + count <= words.count else { throw ReflectionError(description: "truncated instruction at word \(index)") }
            let operands = Array(words[(index + 1)..<(index + count)])
            func string(from start: Int) -> String {
                var bytes: [UInt8] = []
                for word in operands[start...] {
                    for shift in stride(from: 0, to: 32, by: 8) {
                        let byte = UInt8((word >> UInt32(shift)) & 0xFF)
                        if byte == 0 { return String(decoding: bytes, as: UTF8.self) }
                        bytes.append(byte)
                    }
                }
                return String(decoding: bytes, as: UTF8.self)
            }
            switch opcode {
            case 6 where operands.count >= 3: memberNames[operands[0], default: [:]][Int(operands[1])] = string(from: 2)  // OpMemberName
            case 16 where operands.count >= 5 && operands[1] == 17: localSize = operands[2...4].map { Int($0) }  // OpExecutionMode LocalSize
            case 21 where operands.count >= 3: scalars[operands[0]] = operands[2] == 1 ? .int32 : .uint32  // OpTypeInt
            case 22 where operands.count >= 2: scalars[operands[0]] = .float32  // OpTypeFloat
            case 25 where operands.count >= 3: images[operands[0]] = operands[2]  // OpTypeImage: Dim
            case 27 where operands.count >= 2: sampledImages[operands[0]] = operands[1]  // OpTypeSampledImage
            case 28 where operands.count >= 3: arrays[operands[0]] = (operands[1], operands[2])  // OpTypeArray
            case 30 where !operands.isEmpty: structs[operands[0]] = Array(operands.dropFirst())  // OpTypeStruct
            case 32 where operands.count >= 3: pointers[operands[0]] = (operands[1], operands[2])  // OpTypePointer
            case 43 where operands.count >= 3: constants[operands[1]] = operands[2]  // OpConstant
            case 48, 49, 50: if operands.count >= 2 { specConstants.insert(operands[1]) }  // OpSpecConstant{True,False,}
            case 59 where operands.count >= 3: variables.append((operands[0], operands[1], operands[2]))  // OpVariable
            case 71 where operands.count >= 2: decorations[operands[0], default: [:]][operands[1]] = Array(operands.dropFirst(2))  // OpDecorate
            case 72 where operands.count >= 4 && operands[2] == 35: memberOffsets[operands[0], default: [:]][Int(operands[1])] = Int(operands[3])  // OpMemberDecorate Offset
            default: break
            }
            index += count
        }

        specializationIDs = specConstants.compactMap { decorations[$0]?[1]?.first.map(Int.init) }.sorted()  // SpecId
        for variable in variables {
            guard let pointer = pointers[variable.type] else { continue }
            switch variable.storage {
            case 9:  // PushConstant
                guard let members = structs[pointer.pointee] else { throw ReflectionError(description: "push constants are not a block") }
                var block: [Member] = []
                for (position, type) in members.enumerated() {
                    let name = memberNames[pointer.pointee]?[position] ?? "member\(position)"
                    guard let offset = memberOffsets[pointer.pointee]?[position] else {
                        throw ReflectionError(description: "push-constant member \(name) has no offset")
                    }
                    if let scalar = scalars[type] {
                        block.append(Member(name: name, offset: offset, scalar: scalar, count: 1))
                    } else if let array = arrays[type], let scalar = scalars[array.element], let length = constants[array.lengthID],
                              decorations[type]?[6]?.first == 4 {  // ArrayStride 4
                        block.append(Member(name: name, offset: offset, scalar: scalar, count: Int(length)))
                    } else {
                        throw ReflectionError(description: "push-constant member \(name) is not a 32-bit scalar or an array of them")
                    }
                }
                pushConstants = block.sorted { $0.offset < $1.offset }
            case 0, 2, 12:  // UniformConstant, Uniform, StorageBuffer
                guard decorations[variable.id]?[34]?.first ?? 0 == 0, let binding = decorations[variable.id]?[33]?.first else { continue }
                let pointee = pointer.pointee
                let kind: BindingKind
                if variable.storage == 12 || (variable.storage == 2 && decorations[pointee]?[3] != nil) {  // BufferBlock
                    kind = .storageBuffer
                } else if let image = sampledImages[pointee] ?? (images[pointee] != nil ? pointee : nil), images[image] == 5 {  // Dim Buffer
                    kind = .uniformTexelBuffer
                } else {
                    kind = .other
                }
                bindings[Int(binding)] = kind
            default:
                continue
            }
        }
    }

    /// Reads a module from its bytes (a `.spv` file).
    public init(bytes: [UInt8]) throws {
        guard bytes.count % 4 == 0 else { throw ReflectionError(description: "SPIR-V size \(bytes.count) is not whole words") }
        var words = [UInt32](repeating: 0, count: bytes.count / 4)
        for index in words.indices {
            let base = 4 * index
            words[index] = UInt32(bytes[base]) | UInt32(bytes[base + 1]) << 8 | UInt32(bytes[base + 2]) << 16 | UInt32(bytes[base + 3]) << 24
        }
        try self.init(words: words)
    }
}
