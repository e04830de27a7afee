"""Steer the embedded model between two personas with MOD, token by token, and watch the text move.

    python examples/persona_mod.py
"""

from polyalign import MOD, GenerationConfig

PERSONAS = {
    "concise": "You are a blunt, dry, matter-of-fact assistant. Answer in one short plain sentence.",
    "warm": "You are a cheerful, loving assistant. Write long, warm, enthusiastic answers!",
}


def main() -> None:
    mod = MOD.from_personas(PERSONAS)  # one model, one batched forward per step for every persona
    config = GenerationConfig(max_new_tokens=40)
    prompt = "Describe a rainy Monday morning."
    # (1.5, -0.5) and (-0.5, 1.5) extrapolate beyond either persona: reverse KL allows negative weights.
    for weights in [(1.5, -0.5), (1.0, 0.0), (0.5, 0.5), (0.0, 1.0), (-0.5, 1.5)]:
        gen = mod.generate(prompt, weights, config=config)[0]
        print(f"w={weights}  KL={gen.kl:5.1f}  {gen.text!r}")
    print("\nstreaming w=(0.3, 0.7): ", end="")
    for event in mod.stream(prompt, [0.3, 0.7], config=config):
        print(event.text, end="", flush=True)
    print()


if __name__ == "__main__":
    main()
