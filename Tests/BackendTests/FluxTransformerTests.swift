import Foundation
import Testing
import LoRAFuse
import LoRAFuseModels
import LoRAFuseFusion
import LoRAFuseRetrieval
import LoRAFusePipeline
import LoRAFuseVerification
import LoRAFuseToyWorld

/// The FLUX transformer against diffusers run in float64 (Tools/reference/make_flux_fixtures.py).
@Suite(.serialized) struct FluxTransformerTests {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/flux")
    static let names = ["dev-tiny", "schnell-tiny", "dev-wide"]

    static func load(_ name: String) throws -> (FluxModel, FluxInputs, HostTensor) {
        let folder = fixtures.appendingPathComponent(name)
        let model = try FluxModel.load(path: folder.path)
        let inputs = try FluxInputs(SafeTensorsFile(path: folder.appendingPathComponent("inputs.safetensors").path).allTensors(),
                                    config: model.config)
        let expected = try SafeTensorsFile(path: folder.appendingPathComponent("expected.safetensors").path).tensor(named: "sample")
        return (model, inputs, expected)
    }

    /// The same weights as one BFL checkpoint (fused qkv / linear1, shift-first final
    /// modulation) give the same graph values as the diffusers folder.
    @Test(arguments: names)
    func bflLayoutMatchesDiffusersLayout(_ name: String) throws {
        let (model, inputs, expected) = try Self.load(name)
        let bfl = try FluxModel.load(path: Self.fixtures.appendingPathComponent("\(name)/flux_bfl.safetensors").path)
        #expect(bfl.config == model.config, "config inferred from BFL shapes")
        let backend = BackendsUnderTest.all[0]
        let shape = (inputs.batch, inputs.textLength, inputs.imageLength)
        let fromFolder = try backend.execute(FluxTransformer(model: model).graph(batch: shape.0, textLength: shape.1, imageLength: shape.2),
                                             inputs: inputs.bindings).outputs[0]
        let fromBFL = try backend.execute(FluxTransformer(model: bfl).graph(batch: shape.0, textLength: shape.1, imageLength: shape.2),
                                          inputs: inputs.bindings).outputs[0]
        #expect(fromBFL.floats() == fromFolder.floats(), "identical weights must give identical outputs")
        #expect(relativeError(actual: fromBFL.floats(), expected: expected.doubles()) <= 1e-4)
    }

    @Test(arguments: names)
    func matchesDiffusersInFloat64(_ name: String) throws {
        let (model, inputs, expected) = try Self.load(name)
        let graph = try FluxTransformer(model: model).graph(batch: inputs.batch, textLength: inputs.textLength, imageLength: inputs.imageLength)
        for backend in BackendsUnderTest.all {
            let sample = try backend.execute(graph, inputs: inputs.bindings).outputs[0]
            #expect(sample.shape == expected.shape)
            let error = relativeError(actual: sample.floats(), expected: expected.doubles())
            print("flux \(name) \(BackendsUnderTest.label(backend)) relative error \(error)")
            #expect(error <= 1e-4, "\(name) on \(BackendsUnderTest.label(backend)): relative error \(error)")
        }
    }
}

/// Reduced-precision weights and bad models/inputs.
@Suite(.serialized) struct FluxLoadingTests {
    static func copyFixture(_ name: String, to folder: URL, converting dtype: DType? = nil, dropping: String? = nil,
                            config edit: ((inout [String: Any]) -> Void)? = nil) throws {
        let source = FluxTransformerTests.fixtures.appendingPathComponent("\(name)/transformer")
        let target = folder.appendingPathComponent("transformer")
        try FileManager.default.createDirectory(at: target, withIntermediateDirectories: true)
        var config = try JSONSerialization.jsonObject(with: Data(contentsOf: source.appendingPathComponent("config.json"))) as! [String: Any]
        edit?(&config)
        try JSONSerialization.data(withJSONObject: config).write(to: target.appendingPathComponent("config.json"))
        let weights = try SafeTensorsFile(path: source.appendingPathComponent("diffusion_pytorch_model.safetensors").path)
        var tensors: [(name: String, tensor: HostTensor)] = []
        for entry in weights.entries where entry.name != dropping {
            let tensor = weights.tensor(entry)
            tensors.append((entry.name, dtype.map { tensor.converted(to: $0) } ?? tensor))
        }
        try SafeTensorsWriter.write(tensors, to: target.appendingPathComponent("diffusion_pytorch_model.safetensors").path)
    }

    static func temporaryFolder() throws -> URL {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("lorafuse-flux-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        return folder
    }

    @Test(arguments: [DType.float16, .bfloat16])
    func reducedPrecisionWeightsStayWithinTolerance(_ dtype: DType) throws {
        let folder = try Self.temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        try Self.copyFixture("dev-tiny", to: folder, converting: dtype)
        let (_, inputs, expected) = try FluxTransformerTests.load("dev-tiny")
        let model = try FluxModel.load(path: folder.path)
        let graph = try FluxTransformer(model: model).graph(batch: inputs.batch, textLength: inputs.textLength, imageLength: inputs.imageLength)
        for backend in BackendsUnderTest.all {
            let sample = try backend.execute(graph, inputs: inputs.bindings).outputs[0]
            let error = relativeError(actual: sample.floats(), expected: expected.doubles())
            #expect(error <= 2e-2, "\(dtype.name) on \(BackendsUnderTest.label(backend)): \(error)")
            #expect(error > 1e-6, "the weights really were narrowed")
        }
    }

    @Test func badModelsGiveOneClearError() throws {
        let folder = try Self.temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        #expect(throws: ModelError.self) { try FluxModel.load(path: folder.path) }  // empty folder
        #expect(throws: ModelError.self) { try FluxModel.load(path: folder.appendingPathComponent("absent").path) }

        let missing = folder.appendingPathComponent("missing")
        try Self.copyFixture("dev-tiny", to: missing, dropping: "transformer_blocks.1.attn.to_k.weight")
        let model = try FluxModel.load(path: missing.path)
        #expect(throws: ModelError.missingTensor(name: "transformer_blocks.1.attn.to_k.weight", source: missing.appendingPathComponent("transformer").path)) {
            try FluxTransformer(model: model).graph(batch: 1, textLength: 7, imageLength: 15)
        }

        let wrong = folder.appendingPathComponent("wrong")
        try Self.copyFixture("dev-tiny", to: wrong) { $0["joint_attention_dim"] = 25 }
        // A config that disagrees with the weights is refused when the model loads, naming the key and the tensor.
        func refusal(_ name: String, _ edit: @escaping (inout [String: Any]) -> Void) throws -> String {
            let copy = folder.appendingPathComponent(name)
            try Self.copyFixture("dev-tiny", to: copy, config: edit)
            do {
                _ = try FluxModel.load(path: copy.path)
                return "accepted"
            } catch let error as ModelError { return "\(error)" }
        }
        let joint = try refusal("wrong-joint") { $0["joint_attention_dim"] = 25 }
        #expect(joint.contains("joint_attention_dim is 25") && joint.contains("context_embedder.weight has 24 inputs"), "\(joint)")
        let layers = try refusal("wrong-layers") { $0["num_layers"] = 1 }
        #expect(layers.contains("num_layers is 1") && layers.contains("2 transformer_blocks"), "\(layers)")
        let guidance = try refusal("wrong-guidance") { $0["guidance_embeds"] = false }
        #expect(guidance.contains("guidance_embeds is false"), "\(guidance)")
        // JSON of the wrong type names the key and the type expected.
        let fractional = try refusal("fractional") { $0["num_layers"] = 2.5 }
        #expect(fractional.contains("'num_layers' must be an integer, got a number 2.5"), "\(fractional)")
        let null = try refusal("null") { $0["num_layers"] = NSNull() }
        #expect(null.contains("'num_layers' must be an integer, got null"), "\(null)")
        let huge = try refusal("huge") { $0["num_attention_heads"] = 1 << 62 }
        #expect(huge.contains("num_attention_heads is 4611686018427387904"), "\(huge)")
        let axesHuge = try refusal("axes-huge") { $0["axes_dims_rope"] = [1 << 62, 1 << 62, 4] }
        #expect(axesHuge.contains("axes_dims_rope"), "\(axesHuge)")

        let other = folder.appendingPathComponent("other")
        try Self.copyFixture("dev-tiny", to: other) { $0["_class_name"] = "UNet2DConditionModel" }
        #expect(throws: ModelError.self) { try FluxModel.load(path: other.path) }
        let axes = folder.appendingPathComponent("axes")
        try Self.copyFixture("dev-tiny", to: axes) { $0["axes_dims_rope"] = [4, 4, 4] }
        #expect(throws: ModelError.self) { try FluxModel.load(path: axes.path) }
    }

    /// Shards come from the model folder only, and a tensor in two shards is an error.
    @Test func shardsStayInsideTheFolderAndHoldEachTensorOnce() throws {
        let folder = try Self.temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let source = FluxTransformerTests.fixtures.appendingPathComponent("dev-tiny/transformer")
        let weights = try SafeTensorsFile(path: source.appendingPathComponent("diffusion_pytorch_model.safetensors").path)
        func shardedModel(_ name: String, shardNames: [String], duplicate: Bool = false) throws -> URL {
            let target = folder.appendingPathComponent(name)
            try FileManager.default.createDirectory(at: target, withIntermediateDirectories: true)
            try FileManager.default.copyItem(at: source.appendingPathComponent("config.json"), to: target.appendingPathComponent("config.json"))
            let half = weights.entries.count / 2
            let parts = [Array(weights.entries[..<half]), Array(weights.entries[(duplicate ? half - 1 : half)...])]
            var map: [String: String] = [:]
            for (index, part) in parts.enumerated() {
                let path = target.appendingPathComponent(shardNames[index]).standardizedFileURL.path
                try SafeTensorsWriter.write(part.map { ($0.name, weights.tensor($0)) }, to: path)
                for entry in part { map[entry.name] = shardNames[index] }
            }
            try JSONSerialization.data(withJSONObject: ["metadata": [:], "weight_map": map])
                .write(to: target.appendingPathComponent("diffusion_pytorch_model.safetensors.index.json"))
            return target
        }
        let good = try shardedModel("good", shardNames: ["diffusion_pytorch_model-00001-of-00002.safetensors", "diffusion_pytorch_model-00002-of-00002.safetensors"])
        #expect(try FluxModel.load(path: good.path).config.layerCount == 2)
        let twice = try shardedModel("twice", shardNames: ["a.safetensors", "b.safetensors"], duplicate: true)
        let duplicate = weights.entries[weights.entries.count / 2 - 1].name
        #expect(throws: ModelError.notAModel(path: twice.path, reason: "tensor '\(duplicate)' is in both \(twice.appendingPathComponent("a.safetensors").path) and \(twice.appendingPathComponent("b.safetensors").path)")) {
            try FluxModel.load(path: twice.path)
        }
        let outside = try shardedModel("outside", shardNames: ["a.safetensors", "../stolen.safetensors"])
        do {
            _ = try FluxModel.load(path: outside.path)
            Issue.record("a shard outside the model folder was loaded")
        } catch let error as ModelError {
            #expect("\(error)".contains("shard '../stolen.safetensors' is not a file inside"), "\(error)")
        }
    }

    @Test func badInputsListWhatWasExpected() throws {
        let (model, _, _) = try FluxTransformerTests.load("dev-tiny")
        let file = try SafeTensorsFile(path: FluxTransformerTests.fixtures.appendingPathComponent("dev-tiny/inputs.safetensors").path)
        var tensors = file.allTensors()
        tensors["guidance"] = nil
        #expect(throws: ModelError.self) { try FluxInputs(tensors, config: model.config) }
        tensors = file.allTensors()
        tensors["hidden_states"] = HostTensor(shape: [1, 15, 3], floats: Array(repeating: 0, count: 45))
        do {
            _ = try FluxInputs(tensors, config: model.config)
            Issue.record("wrong input shape accepted")
        } catch {
            #expect("\(error)".contains("hidden_states") && "\(error)".contains("[1, 15, 16]"))
        }
        tensors = file.allTensors()
        tensors["txt_ids"] = nil
        do {
            _ = try FluxInputs(tensors, config: model.config)
        } catch {
            #expect("\(error)".contains("missing 'txt_ids'") && "\(error)".contains("img_ids [L, 3]"))
        }
        // Each of these says what is wrong with which tensor.
        func refusal(_ name: String, _ value: HostTensor) -> String {
            var tensors = file.allTensors()
            tensors[name] = value
            do {
                _ = try FluxInputs(tensors, config: model.config)
                return "accepted"
            } catch { return "\(error)" }
        }
        let hidden = file.allTensors()["hidden_states"]!
        var poisoned = hidden.floats()
        poisoned[7] = .nan
        #expect(refusal("hidden_states", HostTensor(shape: hidden.shape, floats: poisoned)).contains("'hidden_states' holds a non-finite value"))
        #expect(refusal("timestep", HostTensor(shape: [1], floats: [.infinity])).contains("'timestep' holds a non-finite value"))
        #expect(refusal("guidance", HostTensor(shape: [1], floats: [.nan])).contains("'guidance' holds a non-finite value"))
        let bool = refusal("hidden_states", HostTensor(shape: hidden.shape, dtype: .bool, values: Array(repeating: 1, count: hidden.elementCount)))
        #expect(bool.contains("'hidden_states' is BOOL; expected a floating-point"), "\(bool)")
        #expect(refusal("hidden_states", HostTensor(shape: [1, 15], floats: Array(repeating: 0, count: 15))).contains("has rank 2"))
        #expect(refusal("hidden_states", HostTensor(shape: [0, 15, 16], floats: [])).contains("at least 1"))
        #expect(refusal("hidden_states", HostTensor(shape: [1, 0, 16], floats: [])).contains("at least 1"))
    }
}

/// Checkpoint layouts users have: sharded diffusers folders, ComfyUI-prefixed BFL files.
@Suite struct FluxCheckpointLayoutTests {
    func sample(_ model: FluxModel) throws -> [Float] {
        let (_, inputs, _) = try FluxTransformerTests.load("schnell-tiny")
        let graph = try FluxTransformer(model: model).graph(batch: inputs.batch, textLength: inputs.textLength, imageLength: inputs.imageLength)
        return try BackendsUnderTest.all[0].execute(graph, inputs: inputs.bindings).outputs[0].floats()
    }

    @Test func shardedDiffusersFolderLoadsThroughItsIndex() throws {
        let folder = try FluxLoadingTests.temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let source = FluxTransformerTests.fixtures.appendingPathComponent("schnell-tiny/transformer")
        let weights = try SafeTensorsFile(path: source.appendingPathComponent("diffusion_pytorch_model.safetensors").path)
        let names = weights.names.sorted()
        var map: [String: String] = [:]
        for (shard, part) in [names.prefix(names.count / 2), names.dropFirst(names.count / 2)].enumerated() {
            let file = "diffusion_pytorch_model-0000\(shard + 1)-of-00002.safetensors"
            try SafeTensorsWriter.write(part.map { ($0, try weights.tensor(named: $0)) }, to: folder.appendingPathComponent(file).path)
            for name in part { map[name] = file }
        }
        try JSONSerialization.data(withJSONObject: ["metadata": [:], "weight_map": map])
            .write(to: folder.appendingPathComponent("diffusion_pytorch_model.safetensors.index.json"))
        try FileManager.default.copyItem(at: source.appendingPathComponent("config.json"), to: folder.appendingPathComponent("config.json"))
        let sharded = try FluxModel.load(path: folder.path)
        let original = try FluxModel.load(path: source.path)
        #expect(try sample(sharded) == sample(original))
    }

    /// A single file whose shapes do not pin the RoPE axes (dev-tiny: 16-wide heads, no
    /// metadata) runs with diffusers' config.json, as `from_single_file(config=…)`; a config
    /// that contradicts the shapes, or one given for a folder, is one clear error.
    @Test func singleFileTakesItsConfigFromConfigJSON() throws {
        let folder = try FluxLoadingTests.temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let dev = FluxTransformerTests.fixtures.appendingPathComponent("dev-tiny")
        let bfl = try SafeTensorsFile(path: dev.appendingPathComponent("flux_bfl.safetensors").path)
        let path = folder.appendingPathComponent("flux1-dev-tiny.safetensors").path
        try SafeTensorsWriter.write(bfl.names.sorted().map { ("model.diffusion_model.\($0)", try bfl.tensor(named: $0)) }, to: path)
        let withoutConfig = try #require(throws: ModelError.self) { try FluxModel.load(path: path) }
        #expect("\(withoutConfig)".contains("--config"), "\(withoutConfig)")

        let configPath = dev.appendingPathComponent("transformer/config.json").path
        let model = try FluxModel.load(path: path, config: configPath)
        let (reference, inputs, expected) = try FluxTransformerTests.load("dev-tiny")
        #expect(model.config == reference.config)
        #expect(try FluxModel.load(path: path, config: dev.path).config == reference.config, "a folder holding config.json")
        let graph = try FluxTransformer(model: model).graph(batch: inputs.batch, textLength: inputs.textLength, imageLength: inputs.imageLength)
        let sample = try BackendsUnderTest.all[0].execute(graph, inputs: inputs.bindings).outputs[0]
        #expect(relativeError(actual: sample.floats(), expected: expected.doubles()) <= 1e-4)

        // Another model's config: every disagreeing value named, in one line.
        let other = FluxTransformerTests.fixtures.appendingPathComponent("schnell-tiny/transformer/config.json").path
        let contradiction = try #require(throws: ModelError.self) { try FluxModel.load(path: path, config: other) }
        let message = "\(contradiction)"
        #expect(message.contains("contradicts") && message.contains(other) && message.contains("guidance_embeds"), "\(message)")
        #expect(!message.contains("\n"))
        // Axes that do not cover the head.
        var object = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: configPath))) as! [String: Any]
        object["axes_dims_rope"] = [2, 2, 2]
        let badAxes = folder.appendingPathComponent("config.json")
        try JSONSerialization.data(withJSONObject: object).write(to: badAxes)
        let axesError = try #require(throws: ModelError.self) { try FluxModel.load(path: path, config: badAxes.path) }
        #expect("\(axesError)".contains("axes_dims_rope"), "\(axesError)")
        #expect(throws: ModelError.self) { try FluxModel.load(path: dev.path, config: configPath) }
    }

    @Test func prefixedBFLCheckpointLoads() throws {
        let folder = try FluxLoadingTests.temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let bfl = try SafeTensorsFile(path: FluxTransformerTests.fixtures.appendingPathComponent("schnell-tiny/flux_bfl.safetensors").path)
        let path = folder.appendingPathComponent("flux1-schnell.safetensors").path
        try SafeTensorsWriter.write(bfl.names.sorted().map { ("model.diffusion_model.\($0)", try bfl.tensor(named: $0)) },
                                    metadata: bfl.metadata, to: path)
        let prefixed = try FluxModel.load(path: path)
        let plain = try FluxModel.load(path: bfl.path)
        #expect(prefixed.config == plain.config)
        #expect(try sample(prefixed) == sample(plain))
    }
}
