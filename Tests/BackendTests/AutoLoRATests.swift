import Foundation
import Testing
import LoRAFuse
import LoRAFuseModels
import LoRAFuseFusion
import LoRAFuseRetrieval
import LoRAFusePipeline
import LoRAFuseVerification
import LoRAFuseToyWorld

/// AutoLoRA gated fusion against DiffSynth-Studio's own LoraMerger / FluxLoraPatcher and
/// LoRA conversion on a tiny DiffSynth FLUX DiT (Tools/reference/make_autolora_fixtures.py).
@Suite(.serialized) struct AutoLoRATests {
    static let fixtures = LoRAApplicationTests.fixtures.deletingLastPathComponent().appendingPathComponent("autolora")
    static func path(_ name: String) -> String { fixtures.appendingPathComponent("\(name).safetensors").path }

    static func expected(_ name: String) throws -> [Double] {
        try SafeTensorsFile(path: path(name)).tensor(named: "sample").doubles()
    }

    static func sample(_ loras: [(String, Float)], on backend: any Backend) throws -> [Float] {
        let model = try FluxModel.load(path: path("flux_bfl"))
        let inputs = try FluxInputs(SafeTensorsFile(path: path("inputs")).allTensors(), config: model.config)
        let adapters = try loras.map { LoRAAdapter(file: try LoRAFile.load(path: path($0.0), model: model), scale: $0.1) }
        let fusion = try AutoLoRAFusion(mergers: AutoLoRAMergers.load(path: path("mergers"), config: model.config), adapters: adapters,
                                        config: model.config)
        let graph = try FluxTransformer(model: model, autolora: fusion)
            .graph(batch: inputs.batch, textLength: inputs.textLength, imageLength: inputs.imageLength)
        return try backend.execute(graph, inputs: inputs.bindings).outputs[0].floats()
    }

    @Test(arguments: [("expected_two", [("lora_1", Float(1)), ("lora_2", 0.7)]),
                      ("expected_three", [("lora_1", 0.8), ("lora_2", -0.5), ("lora_3", 1.2)])])
    func matchesDiffSynth(_ expected: String, _ loras: [(String, Float)]) throws {
        let reference = try Self.expected(expected)
        #expect(relativeError(actual: reference.map(Float.init), expected: try Self.expected("expected_base")) > 0.01,
                "the fusion must change the output (by 100× the tolerance)")
        for backend in BackendsUnderTest.all {
            let error = relativeError(actual: try Self.sample(loras, on: backend), expected: reference)
            #expect(error <= 1e-4, "\(BackendsUnderTest.label(backend)): relative error \(error)")
        }
    }

    /// A model whose q, k, v (and single-block MLP input) are separate tensors, as in a
    /// diffusers folder: the fused layer's base output is concatenated, with the same result.
    @Test func separateQKVWeightsGiveTheSameFusion() throws {
        let bfl = try FluxModel.load(path: Self.path("flux_bfl"))
        var copies: [String: HostTensor] = [:]
        for layer in bfl.config.linearLayers where layer.name.contains("to_q") || layer.name.contains("to_k") || layer.name.contains("to_v")
            || layer.name.contains("add_") || layer.name.contains("proj_mlp") {
            for (kind, shape) in [("weight", Shape([layer.outFeatures, layer.inFeatures])), ("bias", Shape([layer.outFeatures]))] {
                let tensor = try bfl.weights.tensor("\(layer.name).\(kind)", shape: shape)
                copies["\(layer.name).\(kind)"] = HostTensor(shape: shape, floats: tensor.floats())  // a storage of its own
            }
        }
        let model = FluxModel(config: bfl.config, weights: MergedFluxWeights(base: bfl.weights, merged: copies))
        let inputs = try FluxInputs(SafeTensorsFile(path: Self.path("inputs")).allTensors(), config: model.config)
        let adapters = try [("lora_1", Float(1)), ("lora_2", 0.7)].map {
            LoRAAdapter(file: try LoRAFile.load(path: Self.path($0.0), model: model), scale: $0.1)
        }
        let fusion = try AutoLoRAFusion(mergers: AutoLoRAMergers.load(path: Self.path("mergers"), config: model.config), adapters: adapters,
                                        config: model.config)
        let graph = try FluxTransformer(model: model, autolora: fusion)
            .graph(batch: inputs.batch, textLength: inputs.textLength, imageLength: inputs.imageLength)
        #expect(graph.nodes.contains { if case .concat = $0.op { return $0.label == nil } else { return false } })
        let sample = try BackendsUnderTest.all[0].execute(graph, inputs: inputs.bindings).outputs[0].floats()
        #expect(relativeError(actual: sample, expected: try Self.expected("expected_two")) <= 1e-4)
    }

    /// Layers the merger file has no merger for take the LoRAs hot, as DiffSynth's
    /// enable_lora_merger leaves them: with no merger at all, AutoLoRA is hot application.
    @Test func layersWithoutAMergerRunHot() throws {
        let model = try FluxModel.load(path: Self.path("flux_bfl"))
        let inputs = try FluxInputs(SafeTensorsFile(path: Self.path("inputs")).allTensors(), config: model.config)
        let adapters = try [("lora_1", Float(1)), ("lora_3", 0.6)].map {
            LoRAAdapter(file: try LoRAFile.load(path: Self.path($0.0), model: model), scale: $0.1)
        }
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("lorafuse-autolora-\(UUID().uuidString).safetensors")
        defer { try? FileManager.default.removeItem(at: scratch) }
        let all = try SafeTensorsFile(path: Self.path("mergers")).allTensors()
        try SafeTensorsWriter.write(all.filter { $0.key.hasPrefix("model_dict.single_blocks") }, to: scratch.path)
        let singleOnly = try AutoLoRAMergers.load(path: scratch.path, config: model.config)
        #expect(singleOnly.mergers.count == 6)
        let backend = BackendsUnderTest.all[0]
        func run(_ transformer: FluxTransformer) throws -> (Graph, [Float]) {
            let graph = try transformer.graph(batch: inputs.batch, textLength: inputs.textLength, imageLength: inputs.imageLength)
            return (graph, try backend.execute(graph, inputs: inputs.bindings).outputs[0].floats())
        }
        let (gatedGraph, _) = try run(FluxTransformer(model: model, autolora: AutoLoRAFusion(mergers: singleOnly, adapters: adapters, config: model.config)))
        #expect(gatedGraph.nodes.filter { $0.op.kind == .lowRankGate }.count == 6)
        try SafeTensorsWriter.write([String: HostTensor](), to: scratch.path)
        let none = try AutoLoRAMergers.load(path: scratch.path, config: model.config)
        let (_, fused) = try run(FluxTransformer(model: model, autolora: AutoLoRAFusion(mergers: none, adapters: adapters, config: model.config)))
        let (_, hot) = try run(FluxTransformer(model: model, adapters: adapters))
        #expect(relativeError(actual: fused, expected: hot.map(Double.init)) <= 1e-5)
    }

    /// The published LoRAFusion-preview-FLUX.1-dev layout: 304 mergers, 2736 tensors,
    /// 27,316,224 parameters for FLUX.1-dev (a zero-filled file with those names and shapes).
    @Test func acceptsThePublishedLayout() throws {
        var config = FluxConfig()
        config.layerCount = 19
        config.singleLayerCount = 38
        config.attentionHeadCount = 24
        config.attentionHeadDim = 128
        // DiffSynth's default_lora_patterns widths for FLUX.1-dev.
        let widths = Dictionary(uniqueKeysWithValues: [("attn.a_to_qkv", 9216), ("attn.a_to_out", 3072), ("ff_a.0", 12288), ("ff_a.2", 3072),
                                                       ("norm1_a.linear", 18432), ("attn.b_to_qkv", 9216), ("attn.b_to_out", 3072),
                                                       ("ff_b.0", 12288), ("ff_b.2", 3072), ("norm1_b.linear", 18432),
                                                       ("to_qkv_mlp", 21504), ("proj_out", 3072), ("norm.linear", 9216)])
        var tensors: [String: HostTensor] = [:]
        var parameters = 0
        for name in AutoLoRAMergers.layerNames(layerCount: 19, singleLayerCount: 38) {
            let width = try #require(widths[name.split(separator: ".").dropFirst(2).joined(separator: ".")])
            for field in ["weight_base", "weight_lora", "weight_cross", "weight_out", "bias", "norm_base.weight", "norm_base.bias",
                          "norm_lora.weight", "norm_lora.bias"] {
                tensors["model_dict.\(name.replacingOccurrences(of: ".", with: "___")).\(field)"] = HostTensor(shape: [width], dtype: .bfloat16) { _ in }
                parameters += width
            }
        }
        #expect(tensors.count == 2736 && parameters == 27_316_224)
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("lorafuse-autolora-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let file = folder.appendingPathComponent("LoRAFusion.safetensors").path
        try SafeTensorsWriter.write(tensors, to: file)
        let mergers = try AutoLoRAMergers.load(path: file, config: config)
        #expect(mergers.mergers.count == 304)
        #expect(mergers.mergers["single_transformer_blocks.37.attn.to_q"]?.layers.count == 4)
        #expect(mergers.mergers["transformer_blocks.18.attn.add_q_proj"]?.parameters.shape == [9, 9216])
    }

    @Test func mergersForAnotherModelNameTheLayer() throws {
        let other = try FluxModel.load(path: FluxTransformerTests.fixtures.appendingPathComponent("dev-wide").path)
        #expect {
            try AutoLoRAMergers.load(path: Self.path("mergers"), config: other.config)
        } throws: { error in
            "\(error)".contains("blocks.0.attn.a_to_qkv") && "\(error)".contains("192")
        }
        let model = try FluxModel.load(path: Self.path("flux_bfl"))
        #expect(throws: FusionError.self) {
            try AutoLoRAFusion(mergers: AutoLoRAMergers.load(path: Self.path("mergers"), config: model.config), adapters: [], config: model.config)
        }
    }
}
