"""Stand-in of ComfyUI's folder_paths: model folders and file lists."""
import os

supported_pt_extensions = {".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"}
folder_names_and_paths = {"diffusion_models": ([], supported_pt_extensions)}


def add_model_folder_path(folder_name: str, full_folder_path: str, is_default: bool = False) -> None:
    paths, exts = folder_names_and_paths.setdefault(folder_name, ([], supported_pt_extensions))
    if full_folder_path not in paths:
        paths.insert(0, full_folder_path) if is_default else paths.append(full_folder_path)


def get_filename_list(folder_name: str) -> list:
    paths, exts = folder_names_and_paths.get(folder_name, ([], set()))
    out = set()
    for p in paths:
        for root, _dirs, files in os.walk(p):
            for f in files:
                if os.path.splitext(f)[1].lower() in exts:
                    out.add(os.path.relpath(os.path.join(root, f), p).replace(os.sep, "/"))
    return sorted(out)


def get_full_path(folder_name: str, filename: str):
    for p in folder_names_and_paths.get(folder_name, ([], set()))[0]:
        full = os.path.join(p, filename)
        if os.path.isfile(full):
            return full
    return None


def get_full_path_or_raise(folder_name: str, filename: str) -> str:
    full = get_full_path(folder_name, filename)
    if full is None:
        raise FileNotFoundError(f"Model in folder '{folder_name}' with filename '{filename}' not found.")
    return full
