// vulkan-shaders-gen: compiles every kernel variant of Shaders/kernels.json to SPIR-V and
// generates the two files that tie the shaders to the Swift backend, so that neither side
// can drift from the other (ggml-vulkan's vulkan-shaders-gen plays the same part):
//   Shaders/generated/kernel_codes.glsl            op-code constants for the shaders
//   Backends/Vulkan/Sources/Generated/VulkanKernel.swift
//       the kernel enum (one case per kernel, variants as associated formats), each
//       kernel's bindings, texel bindings and specialization count, and one typed
//       push-constant struct per layout, all read back from the compiled SPIR-V.
// Run through Tools/shaders/compile-shaders.sh; ShaderBuildTests runs it into a scratch
// folder and fails when a committed file differs.
//   usage: vulkan-shaders-gen [--root REPO] [--output DIR]
import Foundation
import SPIRVReflection

struct Manifest: Decodable {
    struct Table: Decodable {
        var name: String
        var comment: String
        var values: [String]
    }

    struct Kernel: Decodable {
        var name: String
        var source: String
        var formats: String?
        var defines: [String]?
    }

    var formats: [Table]
    var codes: [Table]
    var kernels: [Kernel]
}

struct Failure: Error, CustomStringConvertible {
    var description: String
}

// MARK: - Names

/// `geluTanh` → `gelu_tanh`, `narrowBF16` → `narrow_bf16`, `conv2d` → `conv2d`.
func snake(_ name: String) -> String {
    var result = ""
    var previous: Character?
    for character in name {
        if character.isUppercase, let last = previous, last.isLowercase || last.isNumber {
            result += "_"
        }
        result += character.lowercased()
        previous = character
    }
    return result
}

/// `query_length` → `queryLength`, `M` → `m`.
func camel(_ glslName: String) -> String {
    let parts = glslName.split(separator: "_").map(String.init)
    guard let first = parts.first else { return glslName }
    let head = first == first.uppercased() ? first.lowercased() : first.prefix(1).lowercased() + first.dropFirst()
    let name = head + parts.dropFirst().map { $0.prefix(1).uppercased() + $0.dropFirst() }.joined()
    let keywords: Set<String> = ["in", "default", "func", "operator", "repeat", "return", "self", "Type", "var", "let", "case", "where"]
    return keywords.contains(name) ? "`\(name)`" : name
}

func typeName(_ name: String) -> String {
    let upper = name.prefix(1).uppercased() + name.dropFirst()
    return upper.replacingOccurrences(of: "Dtype", with: "DType")
}

// MARK: - Compiling

struct Variant {
    var kernel: Manifest.Kernel
    var format: String?
    var file: String { snake(kernel.name) + (format.map { "_" + $0 } ?? "") }
    var defines: [String] {
        (kernel.defines ?? []).map { $0.replacingOccurrences(of: "{FORMAT}", with: (format ?? "").uppercased()) }
    }
}

func run(_ tool: String, _ arguments: [String]) throws {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = [tool] + arguments
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = pipe
    do { try process.run() } catch { throw Failure(description: "cannot run \(tool): \(error)") }
    let output = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    guard process.terminationStatus == 0 else {
        throw Failure(description: "\(tool) \(arguments.joined(separator: " ")) failed:\n\(String(decoding: output, as: UTF8.self))")
    }
}

// MARK: - Generated GLSL

func codesGLSL(_ manifest: Manifest) -> String {
    var lines = ["// Generated from Shaders/kernels.json by Tools/shaders/compile-shaders.sh. Do not edit.",
                 "// The same tables are Swift enums in Backends/Vulkan/Sources/Generated/VulkanKernel.swift.", ""]
    for table in manifest.codes {
        lines.append("// \(table.comment)")
        for (value, name) in table.values.enumerated() {
            lines.append("const uint \(snake(table.name).uppercased())_\(snake(name).uppercased()) = \(value)u;")
        }
        lines.append("")
    }
    return lines.joined(separator: "\n")
}

// MARK: - Generated Swift

struct Interface: Equatable {
    var members: [SPIRVModule.Member]
    var pushConstantSize: Int
    var bindingCount: Int
    var texelBindings: [Int]
    var specializationCount: Int
}

func interface(of module: SPIRVModule, _ file: String) throws -> Interface {
    let bindings = module.bindings.keys.sorted()
    guard bindings == Array(0..<bindings.count) else { throw Failure(description: "\(file): bindings \(bindings) are not 0..<n") }
    if let other = module.bindings.first(where: { $0.value == .other }) {
        throw Failure(description: "\(file): binding \(other.key) is neither a storage buffer nor a uniform texel buffer")
    }
    guard module.specializationIDs == Array(0..<module.specializationIDs.count) else {
        throw Failure(description: "\(file): specialization ids \(module.specializationIDs) are not 0..<n")
    }
    guard module.pushConstantSize <= 128 else {
        throw Failure(description: "\(file): \(module.pushConstantSize) bytes of push constants, past the 128 every device offers")
    }
    return Interface(members: module.pushConstants, pushConstantSize: module.pushConstantSize, bindingCount: bindings.count,
                     texelBindings: bindings.filter { module.bindings[$0] == .uniformTexelBuffer },
                     specializationCount: module.specializationIDs.count)
}

func swiftSource(_ manifest: Manifest, interfaces: [String: Interface]) throws -> String {
    var out = """
    // Generated from Shaders/kernels.json and the compiled SPIR-V by Tools/shaders/compile-shaders.sh
    // (vulkan-shaders-gen). Do not edit: change the manifest or the shader, then recompile.

    """
    func line(_ text: String = "") { out += text + "\n" }

    for table in manifest.formats {
        line()
        line("/// \(table.comment)")
        line("enum Vulkan\(typeName(table.name))Format: String, CaseIterable, Sendable {")
        line("    case \(table.values.joined(separator: ", "))")
        line("}")
    }
    for table in manifest.codes {
        line()
        line("/// \(table.comment)")
        line("/// `\(snake(table.name).uppercased())_*` in the shaders (Shaders/generated/kernel_codes.glsl).")
        line("enum Vulkan\(typeName(table.name))Code: UInt32, CaseIterable, Sendable {")
        for (value, name) in table.values.enumerated() { line("    case \(name) = \(value)") }
        line("}")
    }

    // One push-constant struct per distinct layout, named after the first source using it.
    var structNames: [[SPIRVModule.Member]: String] = [:]
    var structOrder: [(name: String, members: [SPIRVModule.Member], sources: [String])] = []
    var kernelStruct: [String: String] = [:]
    for kernel in manifest.kernels {
        guard let interface = interfaces[kernel.name], !interface.members.isEmpty else { continue }
        if let name = structNames[interface.members] {
            kernelStruct[kernel.name] = name
            if let index = structOrder.firstIndex(where: { $0.name == name }), !structOrder[index].sources.contains(kernel.source) {
                structOrder[index].sources.append(kernel.source)
            }
            continue
        }
        var name = typeName(camel(String(kernel.source.dropLast(".comp".count)))) + "Constants"
        if structOrder.contains(where: { $0.name == name }) { name = typeName(kernel.name) + "Constants" }
        structNames[interface.members] = name
        structOrder.append((name, interface.members, [kernel.source]))
        kernelStruct[kernel.name] = name
    }

    let formatType = Dictionary(uniqueKeysWithValues: manifest.formats.map { ($0.name, "Vulkan\(typeName($0.name))Format") })
    line()
    line("/// Every compiled compute kernel; a kernel compiled per element format carries the format.")
    line("/// `allCases` is the manifest's variant list: the tests check each has its SPIR-V, and no")
    line("/// SPIR-V is shipped without a case.")
    line("enum VulkanKernel: Hashable, Sendable, CustomStringConvertible {")
    for kernel in manifest.kernels {
        line("    case \(kernel.name)\(kernel.formats.map { "(\(formatType[$0]!))" } ?? "")")
    }
    line()
    line("    static let allCases: [VulkanKernel] = [")
    for kernel in manifest.kernels {
        if let formats = kernel.formats {
            line("        \(formatType[formats]!).allCases.map { .\(kernel.name)($0) },")
        } else {
            line("        [.\(kernel.name)],")
        }
    }
    line("    ].flatMap { $0 }")

    func property(_ declaration: String, _ doc: String, bindsFormat: Bool = false, _ value: (Manifest.Kernel, Interface) -> String) {
        line()
        line("    /// \(doc)")
        line("    var \(declaration) {")
        line("        switch self {")
        for kernel in manifest.kernels {
            line("        case .\(kernel.name)\(kernel.formats == nil || !bindsFormat ? "" : "(let format)"): \(value(kernel, interfaces[kernel.name]!))")
        }
        line("        }")
        line("    }")
    }
    property("spirvName: String", "The SPIR-V resource, `SPIRV/<name>.spv`.", bindsFormat: true) { kernel, _ in
        kernel.formats == nil ? "\"\(snake(kernel.name))\"" : "\"\(snake(kernel.name))_\" + format.rawValue"
    }
    line()
    line("    var description: String { spirvName }")
    property("source: String", "The GLSL source in Shaders/.") { kernel, _ in "\"\(kernel.source)\"" }
    property("bindingCount: Int", "Descriptor bindings of set 0, numbered from 0.") { _, interface in "\(interface.bindingCount)" }
    property("texelBindings: Set<Int>", "Bindings that are uniform texel buffers (the others are storage buffers).") { _, interface in
        "[\(interface.texelBindings.map(String.init).joined(separator: ", "))]"
    }
    property("specializationCount: Int", "Specialization constants, `constant_id` 0..<count.") { _, interface in "\(interface.specializationCount)" }
    property("constants: any VulkanPushConstants.Type", "The push-constant struct its dispatches must pass.") { kernel, _ in
        "\(kernelStruct[kernel.name] ?? "VulkanNoConstants").self"
    }
    line("}")

    let arrayLengths = Set(structOrder.flatMap { $0.members.filter { $0.count > 1 }.map(\.count) }).sorted()
    for length in arrayLengths {
        line()
        line("/// \(length) consecutive `uint`s of a push-constant block (a GLSL `uint name[\(length)]`).")
        line("struct VulkanWords\(length): Sendable, Equatable {")
        line("    var words: (\(Array(repeating: "UInt32", count: length).joined(separator: ", ")))")
        line("    /// `values` padded with zeros to \(length).")
        line("    init(_ values: [UInt32]) {")
        line("        precondition(values.count <= \(length), \"\\(values.count) values for \(length) words\")")
        line("        var words = [UInt32](repeating: 0, count: \(length))")
        line("        words.replaceSubrange(0..<values.count, with: values)")
        line("        self.words = (\((0..<length).map { "words[\($0)]" }.joined(separator: ", ")))")
        line("    }")
        line("    static func == (lhs: Self, rhs: Self) -> Bool {")
        line("        withUnsafeBytes(of: lhs.words) { left in withUnsafeBytes(of: rhs.words) { right in left.elementsEqual(right) } }")
        line("    }")
        line("}")
    }

    let swiftScalar: [SPIRVModule.Scalar: String] = [.uint32: "UInt32", .int32: "Int32", .float32: "Float"]
    for entry in structOrder {
        line()
        line("/// Push constants of \(entry.sources.joined(separator: ", ")) (`Parameters` there), laid out as their SPIR-V says.")
        line("struct \(entry.name): VulkanPushConstants {")
        for member in entry.members {
            line("    var \(camel(member.name)): \(member.count > 1 ? "VulkanWords\(member.count)" : swiftScalar[member.scalar]!)")
        }
        line()
        line("    static let spirvMembers: [VulkanPushMember] = [")
        for member in entry.members {
            line("        VulkanPushMember(name: \"\(member.name)\", offset: \(member.offset), words: \(member.count)),")
        }
        line("    ]")
        line("    static var swiftOffsets: [Int?] {")
        line("        [\(entry.members.map { "MemoryLayout<Self>.offset(of: \\.\(camel($0.name)))" }.joined(separator: ",\n         "))]")
        line("    }")
        line("}")
    }
    return out
}

/// Compile results filled in by concurrent workers.
final class Results: @unchecked Sendable {
    private let lock = NSLock()
    private var values: [Result<SPIRVModule, Error>]
    init(count: Int) { values = Array(repeating: .failure(Failure(description: "not compiled")), count: count) }
    func set(_ index: Int, _ value: Result<SPIRVModule, Error>) { lock.withLock { values[index] = value } }
    func get(_ index: Int) -> Result<SPIRVModule, Error> { lock.withLock { values[index] } }
}

// MARK: - Main

func main() throws {
    var root = FileManager.default.currentDirectoryPath
    var output: String?
    var arguments = CommandLine.arguments.dropFirst()
    while let argument = arguments.popFirst() {
        switch argument {
        case "--root": root = arguments.popFirst() ?? root
        case "--output": output = arguments.popFirst()
        default: throw Failure(description: "unknown argument \(argument); usage: vulkan-shaders-gen [--root REPO] [--output DIR]")
        }
    }
    let out = URL(fileURLWithPath: output ?? root)
    let rootURL = URL(fileURLWithPath: root)
    let manifestData = try Data(contentsOf: rootURL.appendingPathComponent("Shaders/kernels.json"))
    let manifest = try JSONDecoder().decode(Manifest.self, from: manifestData)
    let formats = Dictionary(uniqueKeysWithValues: manifest.formats.map { ($0.name, $0.values) })

    let includeDirectory = out.appendingPathComponent("Shaders/generated")
    let spirvDirectory = out.appendingPathComponent("Backends/Vulkan/SPIRV")
    let swiftDirectory = out.appendingPathComponent("Backends/Vulkan/Sources/Generated")
    for directory in [includeDirectory, spirvDirectory, swiftDirectory] {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    }
    try Data(codesGLSL(manifest).utf8).write(to: includeDirectory.appendingPathComponent("kernel_codes.glsl"))

    var variants: [Variant] = []
    for kernel in manifest.kernels {
        if let set = kernel.formats {
            guard let values = formats[set] else { throw Failure(description: "kernel \(kernel.name): no format set \(set)") }
            variants += values.map { Variant(kernel: kernel, format: $0) }
        } else {
            variants.append(Variant(kernel: kernel, format: nil))
        }
    }
    let compiled = variants
    guard Set(variants.map(\.file)).count == variants.count else { throw Failure(description: "two variants share a SPIR-V name") }

    // Compile (in parallel: glslang is single-threaded) and validate every variant.
    let results = Results(count: variants.count)
    DispatchQueue.concurrentPerform(iterations: variants.count) { index in
        let variant = compiled[index]
        let spv = spirvDirectory.appendingPathComponent(variant.file + ".spv").path
        results.set(index, Result {
            try run("glslangValidator", ["-V", "--target-env", "vulkan1.1", "-I" + includeDirectory.path,
                                         "-I" + rootURL.appendingPathComponent("Shaders").path]
                    + variant.defines.map { "-D" + $0 } + [rootURL.appendingPathComponent("Shaders/" + variant.kernel.source).path, "-o", spv])
            try run("spirv-val", ["--target-env", "vulkan1.1", spv])
            return try SPIRVModule(bytes: [UInt8](Data(contentsOf: URL(fileURLWithPath: spv))))
        })
    }
    // Variants no longer in the manifest are removed, so the folder holds exactly the manifest.
    let wanted = Set(variants.map { $0.file + ".spv" })
    for file in try FileManager.default.contentsOfDirectory(atPath: spirvDirectory.path) where file.hasSuffix(".spv") && !wanted.contains(file) {
        try FileManager.default.removeItem(at: spirvDirectory.appendingPathComponent(file))
    }

    var interfaces: [String: Interface] = [:]
    for (index, variant) in variants.enumerated() {
        let module = try results.get(index).get()
        let found = try interface(of: module, variant.file)
        if let first = interfaces[variant.kernel.name], first != found {
            throw Failure(description: "\(variant.file): its interface differs from the other variants of \(variant.kernel.name)")
        }
        interfaces[variant.kernel.name] = found
    }
    try Data(swiftSource(manifest, interfaces: interfaces).utf8).write(to: swiftDirectory.appendingPathComponent("VulkanKernel.swift"))
}

do {
    try main()
} catch {
    FileHandle.standardError.write(Data("vulkan-shaders-gen: \(error)\n".utf8))
    exit(1)
}
