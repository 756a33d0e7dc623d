"""picograd.nn (library layer): layers, model state, checkpoints and datasets, built only on the Tensor API.

    from picograd import nn, optim
    model = [nn.Linear(30, 200), nn.Linear(200, 27)]  # any object holding tensors is a model
    opt = optim.AdamW(nn.get_parameters(model), lr=1e-3)
    nn.state.save(nn.state_dict(model), "model.safetensors")
    nn.load_state_dict(model, nn.state.load("model.safetensors"))
"""
from picograd.nn import state, datasets, init
from picograd.nn.layers import Linear, Embedding, LayerNorm, RMSNorm, Dropout
from picograd.nn.layers import Conv1d, Conv2d, Conv3d, ConvTranspose1d, ConvTranspose2d, MaxPool1d, MaxPool2d, AvgPool1d, AvgPool2d, Upsample
from picograd.nn.norm import BatchNorm1d, BatchNorm2d, GroupNorm
from picograd.nn.recurrent import RNN, LSTM, GRU
from picograd.nn.containers import Sequential, ModuleList
from picograd.nn.module import state_dict, get_parameters, load_state_dict, to_dtype
from picograd.nn.parallel import DataParallel

__all__ = ["state", "datasets", "init", "Linear", "Embedding", "LayerNorm", "RMSNorm", "Dropout", "state_dict", "get_parameters",
           "load_state_dict", "to_dtype"]
__all__ += ["Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "MaxPool1d", "MaxPool2d", "AvgPool1d", "AvgPool2d", "Upsample"]
__all__ += ["DataParallel"]
__all__ += ["BatchNorm1d", "BatchNorm2d", "GroupNorm", "RNN", "LSTM", "GRU", "Sequential", "ModuleList"]
