import Foundation
import LoRAFuse
import LoRAFuseModels
import LoRAFusePipeline

/// The toy world's scoring CNN (`Tools/toyworld/train_world.py`, class `Classifier`), run as a
/// graph on any backend: three times a 3×3 convolution (zero padding 1) and ReLU, the first two
/// followed by a 2×2 space-to-depth (PyTorch's `pixel_unshuffle`); then the mean over positions
/// and a Linear to the class logits. Weights: `conv{1,2,3}.{weight,bias}`, `head.{weight,bias}`;
/// the class names are the file's `classes` metadata (a JSON list).
public struct ImageClassifier: Sendable {
    public let classes: [String]
    public let source: String
    let weights: [String: HostTensor]

    /// A classifier from its safetensors file (weights and label names in the metadata).
    public static func load(path: String) throws -> ImageClassifier {
        let file = try SafeTensorsFile(path: path)
        guard let listed = file.metadata["classes"], let data = listed.data(using: .utf8),
              let classes = try? JSONSerialization.jsonObject(with: data) as? [String], !classes.isEmpty else {
            throw ModelError.notAModel(path: path, reason: "no `classes` metadata (a JSON list of class names): not a LoRAFuse image classifier")
        }
        var weights: [String: HostTensor] = [:]
        let expected: [(String, [Int]?)] = [("conv1.weight", nil), ("conv1.bias", nil), ("conv2.weight", nil), ("conv2.bias", nil),
                                            ("conv3.weight", nil), ("conv3.bias", nil), ("head.weight", nil), ("head.bias", [classes.count])]
        for (name, shape) in expected {
            guard let entry = file.entry(named: name) else { throw ModelError.missingTensor(name: name, source: path) }
            guard [.float32, .float16, .bfloat16].contains(entry.dtype) else {
                throw ModelError.unsupportedDType(name: name, dtype: entry.dtype, source: path)
            }
            if let shape, entry.shape.dimensions != shape {
                throw ModelError.shapeMismatch(name: name, expected: Shape(shape), actual: entry.shape, source: path)
            }
            weights[name] = file.tensor(entry).converted(to: .float32)
        }
        // Each convolution's input is the previous one's output, 4× wider after space-to-depth.
        var channels = 3
        for (index, unshuffled) in [(1, true), (2, true), (3, false)] {
            let weight = weights["conv\(index).weight"]!.shape
            guard weight.rank == 4, weight[1] == channels, weight[2] == 3, weight[3] == 3,
                  weights["conv\(index).bias"]!.shape.dimensions == [weight[0]] else {
                throw ModelError.shapeMismatch(name: "conv\(index).weight", expected: Shape([weight[0], channels, 3, 3]), actual: weight, source: path)
            }
            channels = unshuffled ? weight[0] * 4 : weight[0]
        }
        let head = weights["head.weight"]!.shape
        guard head.dimensions == [classes.count, channels] else {
            throw ModelError.shapeMismatch(name: "head.weight", expected: Shape([classes.count, channels]), actual: head, source: path)
        }
        return ImageClassifier(classes: classes, source: path, weights: weights)
    }

    /// The graph for `batch` RGB images [B, 3, H, W] in [−1, 1] (`pixels`), H and W multiples
    /// of 4; outputs the class probabilities [B, classes].
    public func graph(batch: Int, height: Int, width: Int) throws -> Graph {
        guard batch > 0, height > 0, width > 0, height % 4 == 0, width % 4 == 0 else {
            throw ModelError.invalidInputs("the classifier takes images whose sides are positive multiples of 4, got \(width)×\(height)")
        }
        var graph = Graph()
        var x = graph.input("pixels", [batch, 3, height, width])
        for index in 1...3 {
            let weight = graph.parameter("conv\(index).weight", weights["conv\(index).weight"]!)
            let bias = graph.parameter("conv\(index).bias", weights["conv\(index).bias"]!)
            x = try graph.unary(.relu, graph.conv2d(x, weight: weight, bias: bias, padding: 1))
            if index < 3 { x = try Self.spaceToDepth(x, in: &graph) }
        }
        let (channels, positions) = (x.shape[1], x.shape[2] * x.shape[3])
        let mean = graph.parameter("mean", HostTensor(shape: [positions, 1], floats: [Float](repeating: 1 / Float(positions), count: positions)))
        x = try graph.reshape(graph.matmul(graph.reshape(x, [batch, channels, positions]), mean), [batch, channels])
        let logits = try graph.linear(x, weight: graph.parameter("head.weight", weights["head.weight"]!),
                                      bias: graph.parameter("head.bias", weights["head.bias"]!))
        graph.markOutput(try graph.softmax(logits))
        return graph
    }

    /// PyTorch's `pixel_unshuffle(x, 2)`: [B, C, H, W] → [B, 4C, H/2, W/2], channel c·4 + 2i + j
    /// holding the pixel at offset (i, j) of each 2×2 block.
    static func spaceToDepth(_ x: Tensor, in graph: inout Graph) throws(GraphError) -> Tensor {
        let (b, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let blocks = try graph.reshape(x, [b, c, h / 2, 2, w / 2, 2])
        return try graph.reshape(graph.permute(blocks, [0, 1, 3, 5, 2, 4]), [b, c * 4, h / 2, w / 2])
    }

    /// Class probabilities for 8-bit RGB images (H × W × 3 bytes each, as `FluxTextToImage`
    /// gives them), mapped to [−1, 1] as the classifier was trained.
    public func classify(images: [[UInt8]], width: Int, height: Int, on backend: any Backend) throws -> [[Float]] {
        guard !images.isEmpty else { return [] }
        var values = [Float](repeating: 0, count: images.count * 3 * height * width)
        for (index, pixels) in images.enumerated() {
            guard pixels.count == height * width * 3 else {
                throw ModelError.invalidInputs("image \(index) has \(pixels.count) bytes, expected \(height)×\(width)×3")
            }
            for y in 0..<height { for x in 0..<width { for c in 0..<3 {
                values[((index * 3 + c) * height + y) * width + x] = Float(pixels[(y * width + x) * 3 + c]) / 127.5 - 1
            } } }
        }
        let graph = try graph(batch: images.count, height: height, width: width)
        let output = try backend.execute(graph, inputs: ["pixels": HostTensor(shape: [images.count, 3, height, width], floats: values)]).outputs[0].floats()
        return (0..<images.count).map { Array(output[$0 * classes.count..<($0 + 1) * classes.count]) }
    }
}
