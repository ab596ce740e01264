import Foundation
import LoRAFuse
import LoRAFuseModels

/// The naming conventions LoRA files for FLUX come in.
public enum LoRAFormat: String, Sendable, Hashable, Codable, CaseIterable {
    /// diffusers / peft: `transformer.transformer_blocks.0.attn.to_q.lora_A.weight`.
    case peft = "diffusers"
    /// kohya / sd-scripts: `lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight`, `.alpha`.
    case kohya
    /// Black Forest Labs module names with peft factors: `double_blocks.0.img_attn.qkv.lora_A.weight`.
    case bfl = "bfl"
    /// XLabs attention processors: `double_blocks.0.processor.qkv_lora1.down.weight`.
    case xlabs
    /// DiffSynth-Studio's FLUX DiT names: `blocks.0.attn.a_to_qkv.lora_A.default.weight`.
    case diffSynth = "diffsynth"
}

/// Where a LoRA file's alpha values come from.
public enum AlphaSource: String, Sendable, Hashable {
    /// Per-module `.alpha` tensors (kohya).
    case tensors = "alpha tensors"
    /// diffusers' `lora_adapter_metadata` header entry.
    case metadata = "lora_adapter_metadata"
    /// Nothing stored: alpha = rank.
    case rank = "rank (no alpha stored)"
}

/// One low-rank pair applied to one Linear of the model (diffusers name):
/// ΔW = (alpha / rank) · up · down, with down (A) [rank, in] and up (B) [out, rank].
public struct LoRAModule: Sendable {
    /// The diffusers Linear it changes, e.g. `transformer_blocks.0.attn.to_q`.
    public let layer: String
    public let down: HostTensor
    public let up: HostTensor
    public let alpha: Float
    /// The module path in the file (several layers share it when it was fused).
    public let sourceModule: String
    public var rank: Int { down.shape[0] }
    /// The shape of ΔW = up · down: the layer's [out, in].
    public var deltaShape: Shape { [up.shape[0], down.shape[1]] }
    /// alpha / rank (or alpha / √rank for rank-stabilised LoRAs).
    public let scale: Float
}

/// A LoRA file read into per-Linear modules, whatever its format.
public struct LoRAFile: Sendable {
    public let path: String
    public let format: LoRAFormat
    public let modules: [LoRAModule]
    /// Keys that matched no layer (only when unmatched keys were allowed).
    public let unmatchedKeys: [String]
    /// Where alpha came from: tensors, the file's metadata, or the rank (alpha = r).
    public let alphaSource: AlphaSource
    /// The factors as graphs bind them, one unit a backend makes resident. Restricted
    /// copies (`restricted(to:)`) share it, so choosing layers uploads nothing new.
    public let weightSet: WeightSet

    init(path: String, format: LoRAFormat, modules: [LoRAModule], unmatchedKeys: [String], alphaSource: AlphaSource,
         weightSet: WeightSet? = nil) {
        self.path = path
        self.format = format
        self.modules = modules
        self.unmatchedKeys = unmatchedKeys
        self.alphaSource = alphaSource
        self.weightSet = weightSet ?? WeightSet(name: "LoRA \(URL(fileURLWithPath: path).lastPathComponent)")
    }

    public var moduleCount: Int { Set(modules.map(\.sourceModule)).count }

    /// Reads `path`. With a model, every module is checked against the model's layer widths
    /// and BFL-ordered final modulation rows are reordered to the model's order.
    public static func load(path: String, model: FluxModel? = nil, allowUnmatchedKeys: Bool = false) throws -> LoRAFile {
        let file: SafeTensorsFile
        do { file = try SafeTensorsFile(path: path) } catch { throw LoRAError.notALoRA(path: path, reason: "\(error)") }
        return try LoRAFileReader(file: file, path: path, model: model).read(allowUnmatchedKeys: allowUnmatchedKeys)
    }
}

extension LoRAFile {
    /// The same file restricted to `layers`.
    public func restricted(to layers: Set<String>) -> LoRAFile {
        LoRAFile(path: path, format: format, modules: modules.filter { layers.contains($0.layer) },
                 unmatchedKeys: unmatchedKeys, alphaSource: alphaSource, weightSet: weightSet)
    }
}

/// Groups a file's keys into modules, resolves their targets and alphas.
struct LoRAFileReader {
    let file: SafeTensorsFile
    let path: String
    let model: FluxModel?

    enum Role { case down, up, alpha }

    static let maximumAlphaRatio: Float = 10_000

    /// Splits a key into its module path and role, or nil for keys that are not LoRA factors.
    static func split(_ key: String) -> (module: String, role: Role)? {
        let suffixes: [(String, Role)] = [
            (".lora_A.default.weight", .down), (".lora_B.default.weight", .up), (".lora_A.weight", .down), (".lora_B.weight", .up),
            (".lora_down.weight", .down), (".lora_up.weight", .up), (".down.weight", .down), (".up.weight", .up), (".alpha", .alpha),
        ]
        for (suffix, role) in suffixes where key.hasSuffix(suffix) { return (String(key.dropLast(suffix.count)), role) }
        return nil
    }

    func read(allowUnmatchedKeys: Bool) throws -> LoRAFile {
        var factors: [String: [Role: String]] = [:]
        var unmatched: [String] = []
        for key in file.names {
            guard let (module, role) = Self.split(key), LoRANaming.target(of: module) != nil else {
                unmatched.append(key)
                continue
            }
            factors[module, default: [:]][role] = key
        }
        guard !factors.isEmpty else {
            if file.names.isEmpty { throw LoRAError.notALoRA(path: path, reason: "the file holds no tensors") }
            throw LoRAError.unmatchedKeys(path: path, keys: unmatched.sorted())
        }
        if !unmatched.isEmpty && !allowUnmatchedKeys { throw LoRAError.unmatchedKeys(path: path, keys: unmatched.sorted()) }

        let metadata = try PeftMetadata(file: file, path: path)
        let layers = model.map { Dictionary(uniqueKeysWithValues: $0.config.linearLayers.map { ($0.name, $0) }) }
        var modules: [LoRAModule] = []
        var familyCounts: [LoRAFormat: Int] = [:]
        var sawAlphaTensor = false
        var keysByLayer: [String: String] = [:]
        for module in factors.keys.sorted() {
            let roles = factors[module]!
            guard let downKey = roles[.down] else { throw LoRAError.incompleteModule(path: path, module: module, missing: "down (lora_A)") }
            guard let upKey = roles[.up] else { throw LoRAError.incompleteModule(path: path, module: module, missing: "up (lora_B)") }
            let target = LoRANaming.target(of: module)!
            familyCounts[target.family, default: 0] += 1
            let down = try file.tensor(named: downKey), up = try file.tensor(named: upKey)
            for (tensor, key) in [(down, downKey), (up, upKey)] {
                guard DType.weightTypes.contains(tensor.dtype) else {
                    throw LoRAError.notALoRA(path: path, reason: "'\(key)' is \(tensor.dtype.name); LoRA factors must be F32, F16 or BF16")
                }
                if let index = tensor.firstNonFiniteIndex() { throw LoRAError.nonFiniteFactor(path: path, key: key, index: index) }
            }
            guard down.shape.rank == 2, down.shape[0] >= 1 else {
                throw LoRAError.shapeMismatch(path: path, key: downKey, actual: down.shape, expected: "a matrix [rank, in]")
            }
            let rank = down.shape[0], inFeatures = down.shape[1]
            guard up.shape.rank == 2, up.shape[1] == rank else {
                throw LoRAError.shapeMismatch(path: path, key: upKey, actual: up.shape, expected: "[out, \(rank)] (the rank of \(downKey))")
            }
            var alpha = Float(rank)
            if let alphaKey = roles[.alpha] {
                let stored = try file.tensor(named: alphaKey)
                guard stored.dtype != .bool else {
                    throw LoRAError.invalidAlpha(path: path, key: alphaKey, reason: "stored as BOOL; expected a number")
                }
                let values = stored.doubles()
                guard values.count == 1, values[0].isFinite else {
                    throw LoRAError.invalidAlpha(path: path, key: alphaKey, reason: values.count == 1 ? "\(values[0]) is not finite"
                                                     : "expected one number, got \(values.count) value(s)")
                }
                alpha = Float(values[0])
                sawAlphaTensor = true
            } else if let fromMetadata = metadata.alpha(for: module) {
                alpha = fromMetadata
            }
            let scale = metadata.useRankStabilized ? alpha / Float(rank).squareRoot() : alpha / Float(rank)
            // α/r beyond this is no LoRA anyone trained (they use α ≤ 2r); a negative or huge
            // α is a broken file that would overflow the layer's output.
            guard (0...Self.maximumAlphaRatio).contains(scale) else {
                throw LoRAError.invalidAlpha(path: path, key: roles[.alpha] ?? "lora_adapter_metadata",
                                             reason: "α = \(alpha) for rank \(rank) gives a scale α/r = \(scale) outside [0, \(Int(Self.maximumAlphaRatio))]")
            }
            // A B with the (down, up) dtypes differing is widened so kernels see one type.
            let (sharedDown, sharedUp) = down.dtype == up.dtype ? (down, up) : (down.converted(to: .float32), up.converted(to: .float32))
            for part in target.parts {
                guard let rows = part.slot.rows(total: up.shape[0], inFeatures: inFeatures) else {
                    throw LoRAError.shapeMismatch(path: path, key: upKey, actual: up.shape,
                                                  expected: "rows for \(target.parts.map(\.layer).joined(separator: ", ")) with input width \(inFeatures)")
                }
                if let layers {
                    guard let layer = layers[part.layer] else {
                        if allowUnmatchedKeys { unmatched.append(upKey); continue }
                        throw LoRAError.unmatchedKeys(path: path, keys: [downKey, upKey].map { "\($0) (the model has no \(part.layer))" })
                    }
                    guard inFeatures == layer.inFeatures else {
                        throw LoRAError.shapeMismatch(path: path, key: downKey, actual: down.shape,
                                                      expected: "[\(rank), \(layer.inFeatures)] for \(part.layer) (weight [\(layer.outFeatures), \(layer.inFeatures)])")
                    }
                    guard rows.count == layer.outFeatures else {
                        throw LoRAError.shapeMismatch(path: path, key: upKey, actual: up.shape,
                                                      expected: "\(layer.outFeatures) rows for \(part.layer) (weight [\(layer.outFeatures), \(layer.inFeatures)])")
                    }
                }
                if let earlier = keysByLayer[part.layer] {
                    throw LoRAError.duplicateTarget(path: path, layer: part.layer, keys: [earlier, upKey])
                }
                keysByLayer[part.layer] = upKey
                var partUp = Self.rows(rows, of: sharedUp)
                if part.layer == "norm_out.linear", let model, target.shiftFirstModulation != model.weights.finalModulationShiftFirst {
                    partUp = Self.swappedHalves(partUp)
                }
                modules.append(LoRAModule(layer: part.layer, down: sharedDown, up: partUp, alpha: alpha, sourceModule: module, scale: scale))
            }
        }
        let kohyaKeys = factors.keys.contains { $0.hasPrefix("lora_unet_") || $0.hasPrefix("lora_transformer_") }
        let format = kohyaKeys ? .kohya : familyCounts.max { $0.value < $1.value || ($0.value == $1.value && $0.key.rawValue > $1.key.rawValue) }!.key
        let alphaSource: AlphaSource = sawAlphaTensor ? .tensors : (metadata.present ? .metadata : .rank)
        return LoRAFile(path: path, format: format, modules: modules, unmatchedKeys: unmatched.sorted(), alphaSource: alphaSource)
    }

    /// Rows `range` of a [rows, r] matrix, as a view into the same bytes.
    static func rows(_ range: Range<Int>, of matrix: HostTensor) -> HostTensor {
        if range.count == matrix.shape[0] { return matrix }
        let width = matrix.shape[1]
        return HostTensor(type: TensorType([range.count, width], matrix.dtype), storage: matrix.storage,
                          byteOffset: matrix.byteOffset + range.lowerBound * width * matrix.dtype.byteSize)
    }

    /// The two row halves exchanged: BFL's (shift, scale) final modulation as diffusers'
    /// (scale, shift), or back.
    static func swappedHalves(_ matrix: HostTensor) -> HostTensor {
        let half = matrix.shape[0] / 2, rowBytes = matrix.shape[1] * matrix.dtype.byteSize
        return HostTensor(shape: matrix.shape, dtype: matrix.dtype) { out in
            matrix.withUnsafeBytes { source in
                guard let from = source.baseAddress, let to = out.baseAddress else { return }
                to.copyMemory(from: from + half * rowBytes, byteCount: half * rowBytes)
                (to + half * rowBytes).copyMemory(from: from, byteCount: half * rowBytes)
            }
        }
    }
}

/// diffusers' `lora_adapter_metadata` header entry: the peft LoraConfig of the transformer
/// (`transformer.r`, `transformer.lora_alpha`, `transformer.alpha_pattern`, …) as JSON.
struct PeftMetadata {
    var present = false
    var alpha: Float?
    var alphaPattern: [(String, Float)] = []
    var useRankStabilized = false

    init(file: SafeTensorsFile, path: String) throws {
        guard let text = file.metadata["lora_adapter_metadata"] else { return }
        let value: JSONValue
        do { value = try StrictJSONParser.parse(Array(text.utf8)) } catch {
            throw LoRAError.notALoRA(path: path, reason: "lora_adapter_metadata is not valid JSON: \(error)")
        }
        guard case .object = value else {
            throw LoRAError.notALoRA(path: path, reason: "lora_adapter_metadata is not a JSON object")
        }
        present = true
        func entry(_ name: String) -> JSONValue? { value[member: "transformer.\(name)"] ?? value[member: name] }
        func wrongType(_ name: String, _ expected: String) -> LoRAError {
            LoRAError.notALoRA(path: path, reason: "lora_adapter_metadata: '\(name)' must be \(expected)")
        }
        switch entry("lora_alpha") {
        case nil, .null?: break
        case let field?:
            guard let number = field.number, number.isFinite, Float(number).isFinite else { throw wrongType("lora_alpha", "a finite number") }
            alpha = Float(number)
        }
        switch entry("use_rslora") {
        case nil, .null?: break
        case let .bool(flag)?: useRankStabilized = flag
        default: throw wrongType("use_rslora", "true or false")
        }
        switch entry("alpha_pattern") {
        case nil, .null?, .object?: break
        default: throw wrongType("alpha_pattern", "an object of module pattern → number")
        }
        if case let .object(patterns)? = entry("alpha_pattern") {
            for (pattern, value) in patterns {
                guard let number = value.number, number.isFinite, Float(number).isFinite else {
                    throw LoRAError.invalidAlpha(path: path, key: "alpha_pattern.\(pattern)", reason: "not a finite number")
                }
                alphaPattern.append((pattern, Float(number)))
            }
            // Longer (more specific) patterns first, like peft's matching of the full module name.
            alphaPattern.sort { $0.0.count > $1.0.count }
        }
    }

    /// peft's rule: a pattern applies when the module name is it or ends with "." + it.
    func alpha(for module: String) -> Float? {
        for (pattern, value) in alphaPattern where module == pattern || module.hasSuffix("." + pattern) { return value }
        return alpha
    }
}
