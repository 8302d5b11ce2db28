"""Start a real ComfyUI server on the CPU with this pack installed (manual checks, the frontend check).

    python3 tests/integration/serve_comfy.py /path/to/ComfyUI /tmp/base [extra main.py args...]

``/tmp/base`` becomes ComfyUI's --base-directory (models/, custom_nodes/, input/, output/, user/); the repository is
symlinked into its custom_nodes/ as comfyui-sla. Optional packages that have no CPU build matching the installed
torch (torchvision, torchaudio) are served as inert placeholders, as in the integration tests.
"""
import os
import runpy
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import comfy_env  # noqa: E402


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    comfy, base = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    for sub in ("custom_nodes", "models/diffusion_models", "models/text_encoders", "models/vae", "models/loras",
                "input", "output", "user"):
        os.makedirs(os.path.join(base, sub), exist_ok=True)
    link = os.path.join(base, "custom_nodes", comfy_env.PACK_DIR_NAME)
    if not os.path.exists(link):
        os.symlink(comfy_env.REPO, link, target_is_directory=True)
    comfy_env.install_placeholders()
    sys.argv = [os.path.join(comfy, "main.py"), "--cpu", "--base-directory", base, "--disable-api-nodes",
                *sys.argv[3:]]
    sys.path.insert(0, comfy)
    os.chdir(comfy)
    runpy.run_path(os.path.join(comfy, "main.py"), run_name="__main__")


if __name__ == "__main__":
    main()
