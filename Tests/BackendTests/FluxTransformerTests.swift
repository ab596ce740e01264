import Foundation
import Testing
import LoRAFuse

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
