import Foundation
import Testing
import LoRAFuse
import LoRAFuseModels
import LoRAFuseFusion
import LoRAFuseRetrieval
import LoRAFusePipeline
import LoRAFuseVerification
import LoRAFuseToyWorld

/// The fusion baselines, checked against the peft references they reduce to: merge is
/// diffusers' two-adapter set_adapters, switch/fixed pick one whole LoRA per step,
/// composite averages the single-LoRA predictions, random splits the shared layers.
@Suite(.serialized) struct FusionBaselineTests {
    static func adapter(_ name: String, _ scale: Float, _ model: FluxModel) throws -> LoRAAdapter {
        LoRAAdapter(file: try LoRAFile.load(path: LoRAApplicationTests.fixtures.appendingPathComponent("\(name).safetensors").path, model: model),
                    scale: scale)
    }

    static func expected(_ name: String) throws -> [Double] {
        try SafeTensorsFile(path: LoRAApplicationTests.fixtures.appendingPathComponent("\(name).safetensors").path).tensor(named: "sample").doubles()
    }

    /// The mean of the passes' outputs, as `dit` computes a step's prediction.
    static func predict(_ fusion: LoRAFusion, progress: Double, step: Int, model: FluxModel, backend: any Backend) throws -> [Float] {
        let folder = FluxTransformerTests.fixtures.appendingPathComponent("dev-tiny")
        let inputs = try FluxInputs(SafeTensorsFile(path: folder.appendingPathComponent("inputs.safetensors").path).allTensors(),
                                    config: model.config)
        let outputs = try fusion.passes(progress: progress, step: step, steps: 28).map { adapters in
            let graph = try FluxTransformer(model: model, adapters: adapters)
                .graph(batch: inputs.batch, textLength: inputs.textLength, imageLength: inputs.imageLength)
            return try backend.execute(graph, inputs: inputs.bindings).outputs[0].floats()
        }
        return (0..<outputs[0].count).map { index in outputs.reduce(0) { $0 + $1[index] } / Float(outputs.count) }
    }

    static let backends = [BackendsUnderTest.all.first!, BackendsUnderTest.all.last!]

    @Test func mergeIsBothAdaptersAtTheirScales() throws {
        let model = try FluxModel.load(path: LoRAApplicationTests.diffusersModel)
        let fusion = LoRAFusion(method: .merge, content: try Self.adapter("all.peft", 0.7, model), style: try Self.adapter("partial.peft", -1.3, model))
        for backend in Self.backends {
            let sample = try Self.predict(fusion, progress: 0.4, step: 11, model: model, backend: backend)
            #expect(relativeError(actual: sample, expected: try Self.expected("expected_pair")) <= 1e-4)
        }
    }

    @Test func switchAlternatesEveryTauSteps() throws {
        let model = try FluxModel.load(path: LoRAApplicationTests.diffusersModel)
        var fusion = LoRAFusion(method: .switching, content: try Self.adapter("all.peft", 1, model), style: try Self.adapter("attention.peft", 1, model))
        fusion.switchEvery = 2
        let content = try Self.expected("expected_all"), style = try Self.expected("expected_attention")
        for (step, expected) in [(0, content), (1, content), (2, style), (3, style), (4, content)] {
            let sample = try Self.predict(fusion, progress: Double(step) / 10, step: step, model: model, backend: Self.backends.last!)
            #expect(relativeError(actual: sample, expected: expected) <= 1e-4, "step \(step)")
        }
    }

    @Test func fixedUsesContentForTheFirstFraction() throws {
        let model = try FluxModel.load(path: LoRAApplicationTests.diffusersModel)
        var fusion = LoRAFusion(method: .fixed, content: try Self.adapter("all.peft", 1, model), style: try Self.adapter("attention.peft", 1, model))
        fusion.fixedFraction = 0.3
        let backend = Self.backends.first!
        #expect(relativeError(actual: try Self.predict(fusion, progress: 0.25, step: 7, model: model, backend: backend),
                              expected: try Self.expected("expected_all")) <= 1e-4)
        #expect(relativeError(actual: try Self.predict(fusion, progress: 0.3, step: 8, model: model, backend: backend),
                              expected: try Self.expected("expected_attention")) <= 1e-4)
    }

    @Test func compositeAveragesTheSingleLoRAPredictions() throws {
        let model = try FluxModel.load(path: LoRAApplicationTests.diffusersModel)
        let fusion = LoRAFusion(method: .composite, content: try Self.adapter("all.peft", 1, model), style: try Self.adapter("attention.peft", 1, model))
        #expect(fusion.passes(progress: 0.5, step: 3, steps: 6).count == 2)
        let mean = zip(try Self.expected("expected_all"), try Self.expected("expected_attention")).map { ($0 + $1) / 2 }
        for backend in Self.backends {
            #expect(relativeError(actual: try Self.predict(fusion, progress: 0.5, step: 3, model: model, backend: backend), expected: mean) <= 1e-4)
        }
    }

    @Test func randomSplitsTheSharedLayersBySeed() throws {
        let model = try FluxModel.load(path: LoRAApplicationTests.diffusersModel)
        var fusion = LoRAFusion(method: .random, content: try Self.adapter("all.peft", 1, model), style: try Self.adapter("attention.peft", 1, model))
        func split(seed: UInt64) -> (Set<String>, Set<String>) {
            fusion.seed = seed
            let adapters = fusion.passes(progress: 0.5, step: 1, steps: 2)[0]
            return (Set(adapters[0].file.modules.map(\.layer)), Set(adapters[1].file.modules.map(\.layer)))
        }
        let (content, style) = split(seed: 1)
        #expect(content.isDisjoint(with: style))
        #expect(content.union(style).count == 50)  // every layer of `all`; the 24 shared ones split
        #expect(style.count > 0 && style.count < 24)
        #expect(split(seed: 1) == (content, style))
        #expect(split(seed: 2) != (content, style))
    }
}
