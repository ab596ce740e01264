import Foundation
import Testing
import LoRAFuse
import LoRAFuseFusion
import LoRAFuseModels

/// FLUX transformers stored in fp8 (Tools/reference/make_fp8_fixtures.py): F8_E4M3 and
/// F8_E5M2 Linear weights cast directly, and ComfyUI's scaled fp8 (a `scale_weight` beside each
/// weight), BFL names with and without `model.diffusion_model.`. The weights stay narrow in the
/// graph; the reference is diffusers in float64 on the stored values widened (× the scale).
@Suite(.serialized) struct Float8FluxTests {
    static let fixtures = FluxTransformerTests.fixtures
    static let variants = ["e4m3", "e5m2", "scaled"]
    static let cases = ["dev-tiny", "dev-wide"].flatMap { fixture in variants.map { (fixture, $0) } }

    static func load(_ fixture: String, _ variant: String) throws -> (FluxModel, FluxInputs, HostTensor) {
        let folder = fixtures.appendingPathComponent(fixture)
        let model = try FluxModel.load(path: folder.appendingPathComponent("fp8/\(variant).safetensors").path)
        let inputs = try FluxInputs(SafeTensorsFile(path: folder.appendingPathComponent("inputs.safetensors").path).allTensors(),
                                    config: model.config)
        let expected = try SafeTensorsFile(path: folder.appendingPathComponent("fp8/expected-\(variant).safetensors").path)
            .tensor(named: "sample")
        return (model, inputs, expected)
    }

    static func sample(_ transformer: FluxTransformer, _ inputs: FluxInputs, on backend: any Backend) throws -> HostTensor {
        let graph = try transformer.graph(batch: inputs.batch, textLength: inputs.textLength, imageLength: inputs.imageLength)
        return try backend.execute(graph, inputs: inputs.bindings).outputs[0]
    }

    @Test(arguments: cases)
    func fp8CheckpointsMatchDiffusersOnTheirValues(_ fixture: String, _ variant: String) throws {
        let (model, inputs, expected) = try Self.load(fixture, variant)
        let inner = model.config.innerDim
        let query = try model.weights.tensor("transformer_blocks.0.attn.to_q.weight", shape: [inner, inner])
        #expect(query.dtype == (variant == "e5m2" ? .float8E5M2 : .float8E4M3), "the weight stays narrow: a view of the file")
        let scale = try model.weights.weightScale("transformer_blocks.0.attn.to_q.weight")
        #expect((scale != nil) == (variant == "scaled"))
        for backend in BackendsUnderTest.all {
            let output = try Self.sample(FluxTransformer(model: model), inputs, on: backend)
            let error = relativeError(actual: output.floats(), expected: expected.doubles())
            print("flux fp8 \(fixture) \(variant) \(BackendsUnderTest.label(backend)) relative error \(error)")
            #expect(error <= 1e-4, "\(fixture) \(variant) on \(BackendsUnderTest.label(backend)): relative error \(error)")
        }
    }

    /// The same values as float32 tensors: every Linear weight widened and scaled on the host.
    static func widened(_ model: FluxModel) throws -> FluxModel {
        var merged: [String: HostTensor] = [:]
        for layer in model.config.linearLayers {
            let name = "\(layer.name).weight"
            let stored = try model.weights.tensor(name, shape: [layer.outFeatures, layer.inFeatures])
            let scale = try model.weights.weightScale(name) ?? 1
            merged[name] = HostTensor(shape: stored.shape, floats: stored.floats().map { $0 * scale })
        }
        return FluxModel(config: model.config, weights: MergedFluxWeights(base: model.weights, merged: merged))
    }

    /// LoRAs on a quantized base run unchanged: hot, the low-rank branch in F32 beside the fp8
    /// matmul, equals the same LoRA on the float32 copy of the base; merged, the touched layers
    /// become BF16 (scale applied) and the output stays within BF16 rounding of the hot one.
    /// The same on a GGUF Q8_0 base: the low-rank branch beside the block matmul; merged
    /// layers dequantized to BF16.
    @Test(arguments: ["e4m3", "scaled", "gguf-q8_0"])
    func lorasOnAQuantizedBase(_ variant: String) throws {
        var (model, inputs, _) = try Self.load("dev-tiny", variant == "gguf-q8_0" ? "e4m3" : variant)
        if variant == "gguf-q8_0" {
            model = try FluxModel.load(path: Self.fixtures.appendingPathComponent("dev-tiny/gguf/q8_0.gguf").path)
            #expect(try model.weights.tensor("transformer_blocks.0.attn.to_q.weight", shape: [model.config.innerDim, model.config.innerDim]).dtype == .q8_0)
        }
        let lora = try LoRAFile.load(path: Self.fixtures.deletingLastPathComponent().appendingPathComponent("lora/all.peft.safetensors").path,
                                     model: model)
        let adapters = [LoRAAdapter(file: lora, scale: 0.8)]
        let reference = try Self.widened(model)
        for backend in BackendsUnderTest.all {
            let hot = try Self.sample(FluxTransformer(model: model, adapters: adapters), inputs, on: backend)
            let onFloat = try Self.sample(FluxTransformer(model: reference, adapters: adapters), inputs, on: backend)
            let base = try Self.sample(FluxTransformer(model: model), inputs, on: backend)
            let error = relativeError(actual: hot.floats(), expected: onFloat.floats().map(Double.init))
            #expect(error <= 1e-5, "\(variant) hot LoRA on \(BackendsUnderTest.label(backend)): \(error)")
            #expect(relativeError(actual: base.floats(), expected: hot.floats().map(Double.init)) > 1e-3, "the LoRA changes the output")

            let merged = try model.merging(adapters, on: backend)
            let inner = model.config.innerDim
            #expect(try merged.weights.tensor("transformer_blocks.0.attn.to_q.weight", shape: [inner, inner]).dtype == .bfloat16)
            #expect(try merged.weights.weightScale("transformer_blocks.0.attn.to_q.weight") == nil)
            let mergedSample = try Self.sample(FluxTransformer(model: merged), inputs, on: backend)
            let mergeError = relativeError(actual: mergedSample.floats(), expected: hot.floats().map(Double.init))
            #expect(mergeError <= 2e-2, "\(variant) merged on \(BackendsUnderTest.label(backend)): \(mergeError)")
        }
    }

    /// K-LoRA and AutoLoRA run unchanged on quantized bases (fp8, GGUF Q8_0): the same
    /// fusion on the quantized model and on its float32 copy agree to float32 rounding, on
    /// every backend (planned once, as always, from the LoRA factors alone).
    @Test(arguments: ["e4m3", "gguf-q8_0"])
    func fusionOnAQuantizedBase(_ variant: String) throws {
        let folder = Self.fixtures.appendingPathComponent("dev-tiny")
        let model = try FluxModel.load(path: variant == "gguf-q8_0" ? folder.appendingPathComponent("gguf/q8_0.gguf").path
                                                                    : folder.appendingPathComponent("fp8/e4m3.safetensors").path)
        let reference = try Self.widened(model)
        let inputs = try FluxInputs(SafeTensorsFile(path: folder.appendingPathComponent("inputs.safetensors").path).allTensors(),
                                    config: model.config)
        let pair = KLoRATests.references[KLoRATests.pairs[0]]!
        func adapter(_ name: String, _ scale: Float) throws -> LoRAAdapter {
            LoRAAdapter(file: try LoRAFile.load(path: LoRAApplicationTests.fixtures.appendingPathComponent(name).path, model: model), scale: scale)
        }
        let (content, style) = (try adapter(pair.content, pair.content_scale), try adapter(pair.style, pair.style_scale))
        let autoloraAdapters = try [("lora_1", Float(1)), ("lora_2", 0.7)].map { name, scale in
            LoRAAdapter(file: try LoRAFile.load(path: AutoLoRATests.path(name), model: model), scale: scale)
        }
        let mergers = try AutoLoRAMergers.load(path: AutoLoRATests.path("mergers"), config: model.config)
        for backend in BackendsUnderTest.all {
            let label = "\(variant) on \(BackendsUnderTest.label(backend))"
            let plan = try KLoRAPlanner(backend: backend, cacheFolder: nil).plan(content: content.file, style: style.file, config: model.config)
            let fusion = KLoRAFusion(plan: plan, content: content, style: style)
            for p in [0.0, 0.5, 1.0] {
                let adapters = fusion.adapters(progress: p)
                let quantized = try Self.sample(FluxTransformer(model: model, adapters: adapters), inputs, on: backend)
                let widened = try Self.sample(FluxTransformer(model: reference, adapters: adapters), inputs, on: backend)
                let error = relativeError(actual: quantized.floats(), expected: widened.floats().map(Double.init))
                #expect(error <= 1e-5, "K-LoRA \(label) at p = \(p): \(error)")
            }
            let autolora = try AutoLoRAFusion(mergers: mergers, adapters: autoloraAdapters, config: model.config)
            let quantized = try Self.sample(FluxTransformer(model: model, autolora: autolora), inputs, on: backend)
            let widened = try Self.sample(FluxTransformer(model: reference, autolora: autolora), inputs, on: backend)
            let base = try Self.sample(FluxTransformer(model: model), inputs, on: backend)
            let error = relativeError(actual: quantized.floats(), expected: widened.floats().map(Double.init))
            #expect(error <= 1e-5, "AutoLoRA \(label): \(error)")
            #expect(relativeError(actual: base.floats(), expected: quantized.floats().map(Double.init)) > 1e-3, "the fusion changes the output")
        }
    }

    /// A scale that is not one finite positive float is one clear error naming the tensor.
    @Test func badScalesAreRefused() throws {
        let source = try SafeTensorsFile(path: Self.fixtures.appendingPathComponent("dev-tiny/fp8/scaled.safetensors").path)
        let folder = try FluxLoadingTests.temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let target = "model.diffusion_model.double_blocks.0.img_attn.qkv.scale_weight"
        for (label, bad) in [("nan", HostTensor(shape: [], floats: [.nan])), ("negative", HostTensor(shape: [], floats: [-2])),
                             ("two values", HostTensor(shape: [2], floats: [1, 1]))] {
            var tensors = source.allTensors()
            tensors[target] = bad
            let path = folder.appendingPathComponent("\(label).safetensors").path
            try SafeTensorsWriter.write(tensors, metadata: source.metadata, to: path)
            let model = try FluxModel.load(path: path)
            let error = #expect(throws: ModelError.self) { _ = try FluxTransformer(model: model).graph(batch: 1, textLength: 2, imageLength: 3) }
            #expect(error.map { "\($0)" }?.contains("double_blocks.0.img_attn.qkv.scale_weight") == true, "\(label): \(String(describing: error))")
        }
    }
}

/// FLUX transformers from GGUF files as city96 writes them (Tools/reference/make_gguf_flux_fixtures.py):
/// F16, BF16 and Q8_0 ones run, their tensors views of the mapping (the Q8_0 weights stay
/// quantized: the matmuls dequantize their blocks as they read them), against diffusers on
/// the values the file holds.
@Suite(.serialized) struct GGUFFluxTests {
    static let folder = FluxTransformerTests.fixtures.appendingPathComponent("dev-tiny")

    @Test(arguments: ["f16", "bf16", "q8_0"])
    func ggufCheckpointsMatchDiffusersOnTheirValues(_ variant: String) throws {
        let model = try FluxModel.load(path: Self.folder.appendingPathComponent("gguf/\(variant).gguf").path)
        let reference = try FluxModel.load(path: Self.folder.path)
        #expect(model.config == reference.config, "config inferred from the GGUF shapes and its axes_dims_rope")
        let inner = model.config.innerDim
        #expect(try model.weights.tensor("transformer_blocks.0.attn.to_q.weight", shape: [inner, inner]).dtype
                == ["f16": .float16, "bf16": .bfloat16, "q8_0": .q8_0][variant])
        let inputs = try FluxInputs(SafeTensorsFile(path: Self.folder.appendingPathComponent("inputs.safetensors").path).allTensors(),
                                    config: model.config)
        let expected = try SafeTensorsFile(path: Self.folder.appendingPathComponent("gguf/expected-\(variant).safetensors").path)
            .tensor(named: "sample")
        for backend in BackendsUnderTest.all {
            let output = try Float8FluxTests.sample(FluxTransformer(model: model), inputs, on: backend)
            let error = relativeError(actual: output.floats(), expected: expected.doubles())
            print("flux gguf \(variant) \(BackendsUnderTest.label(backend)) relative error \(error)")
            #expect(error <= 1e-4, "\(variant) on \(BackendsUnderTest.label(backend)): relative error \(error)")
        }
    }
}
